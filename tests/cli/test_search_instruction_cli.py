"""`flmr search --instruction` and image-only searches from the command line (tiny PreFLMR)."""

import json

import pytest
from PIL import Image

from flmr.cli.main import main
from flmr.encoding import DEFAULT_INSTRUCTIONS
from helpers import build_preflmr_index


@pytest.fixture(scope="module")
def preflmr_index(tmp_path_factory):
    return build_preflmr_index(tmp_path_factory.mktemp("cli-preflmr"))[1].path


def search_json(capsys, *argv: str) -> dict:
    code = main(["search", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "instruction token" not in captured.err  # no complaint about the user's own question
    return json.loads(captured.out)


def test_questions_read_the_default_or_the_chosen_instruction(preflmr_index, capsys):
    default = search_json(capsys, str(preflmr_index), "Dune: who wrote it?", "-k", "2")
    assert default["encoded_text"] == f"{DEFAULT_INSTRUCTIONS['question']}: Dune: who wrote it?"
    chosen = search_json(
        capsys, str(preflmr_index), "Dune: who wrote it?", "-k", "2", "--instruction", "Find the author"
    )
    none = search_json(capsys, str(preflmr_index), "Dune: who wrote it?", "-k", "2", "--instruction", "")
    assert chosen["encoded_text"] == "Find the author: Dune: who wrote it?"
    assert none["encoded_text"] == ": Dune: who wrote it?"
    assert [h["score"] for h in chosen["results"]] != [h["score"] for h in default["results"]]


def test_an_image_alone_and_every_image_of_a_result(preflmr_index, tmp_path, capsys):
    image = tmp_path / "query.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    record = search_json(capsys, str(preflmr_index), "", "--image", str(image), "-k", "3")
    assert record["encoded_text"] == f"{DEFAULT_INSTRUCTIONS['image']}:"
    pictures = next(hit for hit in record["results"] if hit["id"] == "two-pictures")
    assert [path.rsplit("/", 1)[1] for path in pictures["image_paths"]] == ["front.png", "back.jpg"]


def test_a_misleading_instruction_is_refused(preflmr_index, capsys):
    assert main(["search", str(preflmr_index), "q", "--instruction", "Note: find"]) != 0
    assert "holds ':' before its end" in capsys.readouterr().err
