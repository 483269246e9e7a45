"""``flmr evaluate`` through an argparse parser built the way the main CLI builds it."""

import argparse
import json

import pytest

import helpers
from evaluation.m2kr_toy import build_toy_m2kr, one_torch_thread  # noqa: F401 - a fixture
from flmr.cli.evaluate import add_evaluate_command

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(argv):
    parser = argparse.ArgumentParser(prog="flmr")
    add_evaluate_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_toy_m2kr(tmp_path_factory.mktemp("m2kr"), "OKVQA", num_queries=6, num_passages=15)


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["evaluate", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "--image-root" in help_text and "PreFLMR_ViT-B" in help_text


def test_evaluate_then_report(tmp_path, toy, capsys):
    common = ["--dataset", str(toy), "--task", "OKVQA", "--ks", "1", "5", "--nbits", "2", "--no-progress"]
    argv = ["evaluate", "--checkpoint", str(helpers.PREFLMR_TINY), *common]
    assert run([*argv, "--image-root", f"OKVQA={toy / 'images'}", "--output-dir", str(tmp_path / "a")]) == 0
    output = capsys.readouterr().out
    assert "OKVQA test: 6 queries, 15 passages" in output
    assert "| Model | OKVQA Recall@5 | OKVQA Pseudo Recall@5 |" in output
    metrics = json.loads((tmp_path / "a" / "OKVQA_test" / "metrics.json").read_text())
    assert metrics["model"] == "preflmr_tiny" and set(metrics["metrics"]) >= {"Recall@5", "Pseudo Recall@5"}

    assert run([*argv, "--image-root", str(toy / "images"), "--exact", "--name", "exact", "--output-dir",
                str(tmp_path / "b")]) == 0  # fmt: skip
    assert (
        run(["evaluate", "--report", str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", str(tmp_path)])
        == 0
    )
    report = (tmp_path / "report.md").read_text()
    assert "| preflmr_tiny |" in report and "| exact |" in report


def test_usage_errors_exit_2(tmp_path, toy, capsys):
    assert run(["evaluate", "--dataset", str(toy), "--task", "OKVQA", "--output-dir", str(tmp_path)]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err
    assert run(["evaluate", "--checkpoint", "x", "--output-dir", str(tmp_path)]) == 2
    argv = [
        "evaluate",
        "--checkpoint",
        "x",
        "--task",
        "OKVQA",
        "--ks",
        "0",
        "5",
        "--output-dir",
        str(tmp_path),
    ]
    assert run(argv) == 2
    with pytest.raises(SystemExit) as exit_info:
        run(["evaluate", "--checkpoint", "x", "--nbits", "3", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2


def test_runtime_errors_exit_1(tmp_path, capsys):
    argv = ["evaluate", "--checkpoint", str(helpers.PREFLMR_TINY), "--dataset", str(tmp_path)]
    assert run([*argv, "--task", "EVQA", "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 1
    assert "has no EVQA_data/ folder" in capsys.readouterr().err
    assert run(["evaluate", "--report", str(tmp_path / "nothing"), "--output-dir", str(tmp_path)]) == 1
