"""The `flmr` command end to end on the tiny checkpoints: index -> info -> search, and its exit codes."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from flmr.cli.main import main
from flmr.data import SAMPLE_QUERIES
from helpers import FLMR_TINY, PREFLMR_TINY


def run_json(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_info_reports_checkpoint_settings_size_and_count(sample_index, capsys):
    info = run_json(capsys, ["info", str(sample_index), "--json"])
    assert info["checkpoint"] == str(FLMR_TINY.resolve())
    assert info["num_documents"] == 200 and info["num_deleted"] == 0
    assert info["nbits"] == 2 and info["dim"] == 16 and info["settings"]["nbits"] == 2
    assert info["size_bytes"] == sum(f.stat().st_size for f in sample_index.rglob("*") if f.is_file())
    assert main(["info", str(sample_index)]) == 0
    table = capsys.readouterr().out
    assert "documents     200 (0 deleted)" in table and "size on disk" in table and "flmr_tiny" in table


def test_search_prints_json_with_the_index_checkpoint(sample_index, capsys):
    record = run_json(capsys, ["search", str(sample_index), SAMPLE_QUERIES[0], "-k", "4", "--json"])
    assert record["checkpoint"] == str(FLMR_TINY.resolve()) and record["question"] == SAMPLE_QUERIES[0]
    results = record["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert all(r["text"].startswith(f"{r['id']}:") for r in results)
    exact = run_json(capsys, ["search", str(sample_index), SAMPLE_QUERIES[0], "-k", "4", "--json", "--exact"])
    assert exact["search"] == "exact" and len(exact["results"]) == 4


def test_search_prints_a_table(sample_index, capsys):
    assert main(["search", str(sample_index), SAMPLE_QUERIES[1], "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "score", "pid", "id", "text"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]


def test_search_with_an_image(sample_index, tmp_path, capsys):
    image = tmp_path / "question.jpg"
    Image.fromarray((np.random.default_rng(1).random((40, 50, 3)) * 255).astype("uint8")).save(image)
    record = run_json(capsys, ["search", str(sample_index), "What is this?", "--image", str(image), "--json"])
    assert record["image"] == str(image) and len(record["results"]) == 10


def test_a_jsonl_collection_with_relative_image_paths(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 40), (200, 0, 0)).save(tmp_path / "images" / "red.png")
    rows = [
        {"id": "red", "text": "a red picture", "image_path": "images/red.png", "metadata": {"colour": "red"}},
        {"id": "paris", "text": "Paris is the capital of France."},
    ]
    collection = tmp_path / "collection.jsonl"
    collection.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "index"
    argv = ["index", "--checkpoint", str(FLMR_TINY), "--collection", str(collection), "--output", str(output)]
    assert main([*argv, "--quiet", "--nbits", "4", "--batch-size", "1"]) == 0
    assert "indexed 2 documents" in capsys.readouterr().out
    results = run_json(capsys, ["search", str(output), "red", "--json", "-k", "2"])["results"]
    red = next(r for r in results if r["id"] == "red")
    assert red["image_path"] == str(tmp_path / "images" / "red.png") and red["metadata"] == {"colour": "red"}
    assert run_json(capsys, ["info", str(output), "--json"])["nbits"] == 4


def test_a_saved_dataset(tmp_path, capsys):
    datasets = pytest.importorskip("datasets", reason="--dataset needs the datasets package")
    rows = {
        "id": ["a", "b", "c"],
        "text": ["Paris is in France.", "Rome is in Italy.", "Bern is in Switzerland."],
    }
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / "saved")
    output = tmp_path / "index"
    argv = [
        "index",
        "--checkpoint",
        str(FLMR_TINY),
        "--dataset",
        str(tmp_path / "saved"),
        "--output",
        str(output),
    ]
    assert main([*argv, "--quiet"]) == 0
    assert "indexed 3 documents" in capsys.readouterr().out
    assert run_json(capsys, ["info", str(output), "--json"])["num_documents"] == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "{index}", "q", "-k", "0"], "must be at least 1"),
        (["search", "{index}"], "required: question"),
        (["search", "{index}", "q", "--device", "gpu!"], "is not a device"),
        (
            ["index", "--checkpoint", "c", "--collection", "sample", "--output", "o", "--nbits", "3"],
            "invalid choice",
        ),
        (
            ["index", "--checkpoint", "c", "--output", "o"],
            "one of the arguments --collection --dataset is required",
        ),
        (
            ["index", "--checkpoint", "c", "--collection", "a", "--dataset", "b", "--output", "o"],
            "not allowed with",
        ),
        (["frobnicate"], "invalid choice"),
        ([], "required: COMMAND"),
    ],
)
def test_usage_errors_exit_with_2(sample_index, capsys, argv, message):
    assert main([arg.format(index=sample_index) for arg in argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "{tmp}/nowhere", "q"], "no index at"),
        (["info", "{tmp}/nowhere"], "no index at"),
        (["info", "{tmp}"], "is not a flmr index"),
        (["search", "{index}", "q", "--image", "{tmp}/missing.jpg"], "image file"),
        (["search", "{index}", "q", "--checkpoint", str(PREFLMR_TINY)], "was built with another checkpoint"),
        (["search", "{index}", "q", "--checkpoint", "{tmp}/no-checkpoint"], "error:"),
        (
            [
                "index",
                "--checkpoint",
                str(FLMR_TINY),
                "--collection",
                "{tmp}/none.jsonl",
                "--output",
                "{tmp}/i",
            ],
            "does not exist",
        ),
        (
            ["index", "--checkpoint", str(FLMR_TINY), "--collection", "sample", "--output", "{index}"],
            "already exists",
        ),
        (
            [
                "index",
                "--checkpoint",
                str(FLMR_TINY),
                "--collection",
                "{tmp}/bad.jsonl",
                "--output",
                "{tmp}/i",
            ],
            "is not JSON",
        ),
    ],
)
def test_runtime_errors_exit_with_1(sample_index, tmp_path, capsys, argv, message):
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "fine"}\n{broken\n')
    assert main([arg.format(index=sample_index, tmp=tmp_path) for arg in argv]) == 1
    last_line = capsys.readouterr().err.splitlines()[-1]  # after any progress bars
    assert last_line.startswith("error:") and message in last_line


def test_an_index_without_a_recorded_checkpoint_needs_one(tmp_path, capsys):
    import flmr
    from flmr.retrieval import Retriever

    model = flmr.FLMRModelForRetrieval.from_pretrained(FLMR_TINY)
    model.config._name_or_path = ""  # a model built in memory has no checkpoint to record
    Retriever(model).index(["a", "b"], tmp_path / "index", show_progress=False)
    assert main(["search", str(tmp_path / "index"), "q"]) == 1
    assert "pass --checkpoint" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "index"), "q", "--checkpoint", str(FLMR_TINY)]) == 0


def test_help_documents_examples_and_exit_codes(capsys):
    for argv in (
        ["--help"],
        ["index", "--help"],
        ["search", "--help"],
        ["serve", "--help"],
        ["info", "--help"],
    ):
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "exit codes:" in text and "2    usage error" in text
        assert "flmr " in text.split("exit codes:")[0]  # an example


def test_the_flmr_command_serves_an_index(sample_index, tmp_path):
    """`flmr serve` in its own process: ready, answers a search, stops on SIGTERM."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "flmr.cli.main", "serve", str(sample_index), "--port", str(port)]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below, after the process
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ready", timeout=5) as answer:
                    assert json.load(answer)["ready"] is True
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "serve.log"
                ).read_text()
                time.sleep(0.25)
        url = f"http://127.0.0.1:{port}/api/search?q=text+editor&k=3"
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert len(json.load(answer)["results"]) == 3
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert "serving" in (tmp_path / "serve.log").read_text()
