"""The README's main-job command."""

import numpy as np
from PIL import Image

from flmr.cli.main import main
from helpers import PREFLMR_TINY


def test_score_prints_a_table_and_ranks_the_matching_document_first(tmp_path, capsys):
    image = tmp_path / "q.jpg"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")).save(image)
    code = main(
        [
            "score",
            "--checkpoint",
            str(PREFLMR_TINY),
            "--query",
            "Using the provided image, obtain documents that address the subsequent question: capital of France?",
            "--image",
            str(image),
            "--document",
            "Paris is the capital of France.",
            "--document",
            "zzz",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "MaxSim scores" in out and "d0: Paris is the capital of France." in out
    row = next(line for line in out.splitlines() if line.strip().startswith("q0:"))
    scores = [float(x) for x in row.split("best")[0].split(":")[1].split()]
    assert len(scores) == 2 and all(np.isfinite(scores))


def test_score_rejects_mismatched_images(capsys):
    code = main(
        [
            "score",
            "--checkpoint",
            str(PREFLMR_TINY),
            "--query",
            "a",
            "--query",
            "b",
            "--image",
            "x.jpg",
            "--document",
            "d",
        ]
    )
    assert code == 2
    assert "1 --image for 2 --query" in capsys.readouterr().err


def test_score_reports_a_missing_checkpoint(tmp_path, capsys):
    code = main(["score", "--checkpoint", str(tmp_path / "nowhere"), "--query", "a", "--document", "d"])
    assert code == 1
    assert "error:" in capsys.readouterr().err
