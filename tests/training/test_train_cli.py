"""``flmr train`` through an argparse parser built the way the main CLI builds it."""

import argparse
import json

import pytest

import helpers
from evaluation.m2kr_toy import build_toy_m2kr, one_torch_thread  # noqa: F401 - a fixture
from flmr import FLMRModelForRetrieval
from flmr.cli.train import add_train_command

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHORT_RUN = ["--batch-size", "2", "--accumulate-grad-batches", "1", "--num-negative-examples", "1",
             "--max-steps", "2", "--warmup-steps", "0", "--logger", "none"]  # fmt: skip


def run(argv):
    parser = argparse.ArgumentParser(prog="flmr")
    add_train_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["train", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "--freeze-vision-encoder" in help_text and "--train-file" in help_text


def test_train_on_jsonl_with_validation(tmp_path, capsys):
    rows = [
        {"query": f"What colour is the {subject}?", "positives": [f"The {subject} is {colour}."]}
        for subject, colour in [("eagle", "red"), ("tower", "blue"), ("bridge", "green"), ("violin", "gold")]
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    (tmp_path / "valid.jsonl").write_text("\n".join(json.dumps(row) for row in rows[:2]))
    argv = ["train", "--checkpoint", str(helpers.FLMR_TINY), "--train-file", str(tmp_path / "train.jsonl"),
            "--valid-file", str(tmp_path / "valid.jsonl"), "--val-check-interval", "2", "--val-ks", "1", "2",
            "--output-dir", str(tmp_path / "out"), *SHORT_RUN]  # fmt: skip
    assert run(argv) == 0
    output = capsys.readouterr().out
    assert "trained 2 steps" in output and "val/Recall@1" in output
    FLMRModelForRetrieval.from_pretrained(tmp_path / "out" / "model_step_2")


def test_train_on_m2kr(tmp_path, capsys):
    root = build_toy_m2kr(tmp_path / "data", num_queries=4, num_passages=8)
    argv = ["train", "--checkpoint", str(helpers.PREFLMR_TINY), "--dataset", str(root), "--task", "EVQA",
            "--image-root", str(root / "images"), "--valid-split", "none", "--freeze-vision-encoder",
            "--output-dir", str(tmp_path / "out"), *SHORT_RUN]  # fmt: skip
    assert run(argv) == 0
    assert "last checkpoint:" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    base = ["train", "--checkpoint", "x", "--output-dir", str(tmp_path)]
    assert run(base) == 2
    assert run([*base, "--train-file", "t.jsonl", "--dataset", "d", "--task", "EVQA"]) == 2
    assert run([*base, "--dataset", "d"]) == 2
    assert "--dataset needs --task" in capsys.readouterr().err


def test_runtime_errors_exit_1(tmp_path, capsys):
    argv = ["train", "--checkpoint", str(helpers.FLMR_TINY), "--train-file", str(tmp_path / "absent.jsonl"),
            "--output-dir", str(tmp_path)]  # fmt: skip
    assert run(argv) == 1
    assert "does not exist" in capsys.readouterr().err
