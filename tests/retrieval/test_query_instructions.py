"""PreFLMR queries read an instruction before the question, as the checkpoints were trained (tiny PreFLMR)."""

import logging

import pytest
import torch
from PIL import Image

from flmr.encoding import DEFAULT_INSTRUCTIONS, InstructionError, QueryEncoder, build_query_text
from flmr.retrieval import Retriever
from helpers import FLMR_TINY, build_preflmr_index


@pytest.fixture(scope="module")
def preflmr(tmp_path_factory):
    return build_preflmr_index(tmp_path_factory.mktemp("instructions"))


def kept_tokens(retriever: Retriever, text: str) -> list[str]:
    """The query tokens whose vectors are not masked, read from the encoded vectors."""
    encoder = QueryEncoder(retriever.model)
    vectors = encoder.encode([text])[0]
    labels = encoder.vector_labels(text, vectors.shape[0])
    return [label for (kind, label), vector in zip(labels, vectors, strict=True) if bool(vector.any())]


def test_each_query_form_gets_its_trained_instruction():
    assert build_query_text("who built it?", True, ":") == (
        f"{DEFAULT_INSTRUCTIONS['image_and_question']}: who built it?"
    )
    assert build_query_text("who built it?", False, ":").startswith(DEFAULT_INSTRUCTIONS["question"] + ":")
    assert build_query_text(None, True, ":") == DEFAULT_INSTRUCTIONS["image"] + ":"
    assert build_query_text("  ", True, ":", instruction="Find the page of this image") == (
        "Find the page of this image:"
    )
    assert build_query_text("q: a", False, ":", instruction="") == ": q: a"  # no instruction at all
    assert build_query_text("Dune: who?", False, None) == "Dune: who?"  # FLMR reads the question alone
    assert build_query_text("Dune: who?", False, None, instruction="Find") == "Find: Dune: who?"
    with pytest.raises(InstructionError, match="holds ':' before its end"):
        build_query_text("q", False, ":", instruction="Note: find documents")


def test_a_colon_in_the_question_masks_no_question_word(preflmr, caplog):
    retriever = preflmr[0]
    with caplog.at_level(logging.WARNING):
        texts = retriever.query_texts(["Dune: who wrote the novel?", "Ratio 3:2 screens: which brands?"])
        kept = [kept_tokens(retriever, text) for text in texts]
        retriever.search(["which laptops", "Dune: who wrote it?"], preflmr[1], k=2)
    assert {"dune", "who", "wrote", "novel"} <= set(kept[0])
    assert {"ratio", "3", "2", "screens", "which"} <= set(kept[1])
    instruction_only = set(DEFAULT_INSTRUCTIONS["question"].lower().split()) - {
        "who",
        "wrote",
        "the",
        "novel",
    }
    assert not instruction_only & set(kept[0])  # masked
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "instruction" in r.message]
    # read as typed (the original package's way), "dune" is taken for the instruction and masked
    assert "dune" not in kept_tokens(retriever, "Dune: who wrote the novel?")


def test_the_instruction_can_be_chosen_and_changes_the_query(preflmr):
    retriever, index, _ = preflmr
    default = retriever.encode_queries(["who wrote Dune"])
    same = retriever.encode_queries(["who wrote Dune"], instruction=DEFAULT_INSTRUCTIONS["question"])
    other = retriever.encode_queries(["who wrote Dune"], instruction="Find the author")
    torch.testing.assert_close(default, same)
    assert not torch.allclose(default, other)
    hits = retriever.search(["who wrote Dune"], index, k=3, instruction="Find the author")[0]
    alone = retriever.search(["who wrote Dune"], index, k=3, instruction=["Find the author"])[0]
    assert [(h.pid, h.score) for h in hits] == [(h.pid, h.score) for h in alone]
    with pytest.raises(ValueError, match="2 instructions for 1 queries"):
        retriever.encode_queries(["q"], instruction=["a", "b"])


def test_image_only_and_image_with_question(preflmr, tmp_path):
    retriever, index, _ = preflmr
    image = tmp_path / "query.png"
    Image.new("RGB", (40, 40), (190, 40, 40)).save(image)
    assert retriever.query_texts(None, images=[image]) == [DEFAULT_INSTRUCTIONS["image"] + ":"]
    image_only = retriever.search([None], index, k=3, images=[image])[0]
    with_question = retriever.search(["what is this?"], index, k=3, images=[image])[0]
    assert len(image_only) == 3 and [h.score for h in image_only] != [h.score for h in with_question]


def test_explanations_label_instruction_tokens(preflmr):
    retriever, index, _ = preflmr
    text = retriever.query_texts("Dune: who wrote it?", instruction="Find the author")[0]
    labels = QueryEncoder(retriever.model).vector_labels(text, 40)
    assert labels[2:6] == [("instruction", "find"), ("instruction", "the"), ("instruction", "author")] + [
        ("instruction", ":")
    ]
    assert labels[6] == ("text", "dune")
    hit = retriever.search("Dune: who wrote it?", index, k=1, instruction="Find the author", explain=True)[0][
        0
    ]
    explained = retriever.explain("Dune: who wrote it?", hit, index, instruction="Find the author")
    assert abs(explained.score - hit.score) < 1e-3
    # PreFLMR masks its instruction: those tokens add nothing, so none is among the matches
    assert {m.query.kind for m in explained.matches} <= {"text"}
    assert "dune" in {m.query.label for m in explained.matches}


def test_flmr_reads_the_question_as_typed():
    flmr = Retriever.from_pretrained(FLMR_TINY)
    assert flmr.query_texts(["Dune: who?"]) == ["Dune: who?"]
    assert QueryEncoder(flmr.model).vector_labels("Find: x", 6)[2] == ("text", "find")
