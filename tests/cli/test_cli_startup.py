"""The command line answers before it imports torch, is quiet when asked, and speaks in flags."""

import json
import subprocess
import sys

import pytest

from flmr.cli.main import NBITS_CHOICES, main
from helpers import FLMR_TINY, REPO_ROOT, run_python

PROBE = """
import json, sys
from flmr.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["--version"], 0),
        (["search", "--help"], 0),
        (["index", "--checkpoint", "c", "--collection", "sample", "--output", "o", "--nbits", "3"], 2),
        (["search", "idx", "q", "--device", "gpu"], 2),
        (["search", "idx", "q", "--filter", '{"year": {"$after": 1}}'], 2),
        (["serve", "idx", "--ndocs", "0"], 2),
        (["evaluate", "--output-dir", "o", "--ks", "x"], 2),
        (["frobnicate"], 2),
    ],
)
def test_help_version_and_usage_errors_import_neither_torch_nor_transformers(argv, code) -> None:
    result = run_python(PROBE.replace("sys.argv[1:]", repr(argv)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"code": code, "torch": False, "transformers": False}


def test_version(capsys) -> None:
    import flmr

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"flmr {flmr.__version__}"


def test_nbits_choices_are_the_index_formats() -> None:
    from flmr.index import SUPPORTED_NBITS

    assert tuple(NBITS_CHOICES) == tuple(SUPPORTED_NBITS)


def flmr_command(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flmr", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**_environment(), "COLUMNS": "200"},
        **kwargs,
    )


def _environment() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}


def test_quiet_commands_print_no_bars_and_no_log_lines(tmp_path) -> None:
    output = tmp_path / "index"
    index = flmr_command(
        "index", "--checkpoint", str(FLMR_TINY), "--collection", "sample", "--output", str(output), "--quiet"
    )
    assert index.returncode == 0 and index.stderr == ""
    assert index.stdout.startswith("indexed 200 documents")
    search = flmr_command("--quiet", "search", str(output), "Which text editor?", "-k", "2")
    assert search.returncode == 0 and search.stderr == ""
    assert len(search.stdout.splitlines()) == 3  # header and two hits
    tiny = flmr_command("tiny-checkpoint", str(tmp_path / "ckpt"), "--quiet")
    assert tiny.returncode == 0 and tiny.stderr == ""
    # without --quiet the same commands do show bars, so the check above can fail
    loud = flmr_command("search", str(output), "Which text editor?", "-k", "2")
    assert "Loading weights" in loud.stderr


def test_a_reader_that_stops_reading_is_no_error(sample_index) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "flmr", "info", str(sample_index), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(),
    )
    process.stdout.close()  # like `| head` that has read its lines before flmr writes
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141
    assert stderr == ""


def test_info_on_a_file_says_it_wants_the_index_folder(tmp_path, capsys) -> None:
    (tmp_path / "collection.jsonl").write_text('{"id": 1, "text": "a"}\n')
    assert main(["info", str(tmp_path / "collection.jsonl")]) == 1
    assert (
        "is a file, not an index: give the folder that `flmr index --output` wrote" in capsys.readouterr().err
    )


def test_errors_name_the_flags(sample_index, tmp_path, capsys) -> None:
    argv = ["index", "--checkpoint", str(FLMR_TINY), "--collection", "sample", "--output", str(sample_index)]
    assert main(argv) == 1
    assert "add --overwrite to replace it" in capsys.readouterr().err
    no_tokenizers = tmp_path / "no_tokenizers"
    no_tokenizers.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizers / name).write_bytes((FLMR_TINY / name).read_bytes())
    assert main(["search", str(sample_index), "q", "--checkpoint", str(no_tokenizers)]) == 1
    error = capsys.readouterr().err
    assert f"--checkpoint {no_tokenizers}: no query_tokenizer/ folder" in error and "=" not in error
    assert main(["search", str(sample_index), "q", "--checkpoint", "./no/such/checkpoint"]) == 1
    assert "checkpoint folder './no/such/checkpoint' does not exist" in capsys.readouterr().err


def test_a_failed_index_says_its_chunks_are_resume_state(tmp_path, capsys) -> None:
    # the second document's image is missing: encoding fails after the chunk folder was started
    collection = tmp_path / "collection.jsonl"
    collection.write_text(
        '{"id": "a", "text": "one"}\n{"id": "b", "text": "two", "image_path": "missing.jpg"}\n'
    )
    output = tmp_path / "index"
    argv = ["index", "--checkpoint", str(FLMR_TINY), "--collection", str(collection), "--output", str(output)]
    assert main([*argv, "--quiet"]) == 1
    error = capsys.readouterr().err
    assert (tmp_path / "index.chunks").is_dir()
    assert f"{tmp_path / 'index.chunks'}/: the same command resumes from them" in error
