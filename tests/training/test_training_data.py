"""Training rows (JSONL and M2KR), negative sampling and the collator's batch layout."""

import json
import random

import pytest
import torch

import helpers
from evaluation.m2kr_toy import build_toy_m2kr
from flmr import FLMRModelForRetrieval
from flmr.model.image_processing import load_image_processor
from flmr.training import (
    PREFLMR_INSTRUCTIONS,
    ContrastiveCollator,
    ContrastiveExample,
    Passage,
    TrainingDataError,
    load_training_data,
    pick_negatives,
)


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def test_jsonl_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"query": "q1", "instruction": "Find:", "image_path": "a.jpg", "positives": ["pos one"],
             "negatives": [{"id": "n1", "text": "neg one"}]},
            {"question": "q2", "positives": [{"id": "p2", "text": "pos two"}], "id": "second"},
        ],
    )  # fmt: skip
    data = load_training_data(path, image_root="/images")
    first, second = data.examples
    assert (first.question, first.instruction, first.image_path) == ("q1", "Find:", "/images/a.jpg")
    assert first.positives == [Passage("pos one", "pos one")] and first.negatives == [
        Passage("n1", "neg one")
    ]
    assert (second.question, second.image_path, second.key) == ("q2", None, "second")
    assert {p.id for p in data.passages} == {"pos one", "n1", "p2"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"positives": ["p"]}, "'query' must be a string"),
        ({"query": "q", "positives": []}, "at least one passage"),
        ({"query": "q", "positives": [3]}, "a passage must be"),
    ],
)
def test_bad_jsonl_rows_are_named(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(TrainingDataError, match=message):
        load_training_data(path)


def test_m2kr_rows(tmp_path):
    root = build_toy_m2kr(tmp_path, num_queries=5, num_passages=12)
    data = load_training_data(root, task="EVQA", split="train", image_root=root / "images")
    assert len(data.examples) == 5 and len(data.passages) == 12
    example = data.examples[0]
    assert example.key == "q0_0" and example.image_path == str(root / "images" / "img_0.png")
    assert example.positives[0].id.startswith("p0_") and "The " in example.positives[0].text
    assert data.examples[1].image_path is None


def test_negatives_hard_first_then_random_never_positive():
    pool = [Passage(str(i), f"text {i}") for i in range(20)]
    example = ContrastiveExample("q", positives=[pool[0], pool[1]], negatives=[pool[5], pool[6]])
    for seed in range(20):
        negatives = pick_negatives(example, 4, pool, random.Random(seed))
        ids = [p.id for p in negatives]
        assert set(ids[:2]) == {"5", "6"} and len(set(ids)) == 4 and not {"0", "1"} & set(ids)
    assert len(pick_negatives(example, 1, pool, random.Random(0))) == 1
    with pytest.raises(TrainingDataError, match="cannot find 3 negatives"):
        pick_negatives(ContrastiveExample("q", positives=[pool[0]]), 3, pool[:3], random.Random(0))


@pytest.fixture(scope="module")
def preflmr():
    return FLMRModelForRetrieval.from_pretrained(helpers.PREFLMR_TINY)


def test_collator_layout(tmp_path, preflmr):
    root = build_toy_m2kr(tmp_path, num_queries=4, num_passages=12)
    data = load_training_data(root, task="EVQA", split="train", image_root=root / "images")
    collate = ContrastiveCollator(preflmr, load_image_processor(preflmr.config), data.passages, 2)
    torch.manual_seed(0)
    batch = collate(data.examples)
    assert batch["query_input_ids"].shape == (4, 32)
    assert batch["context_input_ids"].shape[0] == 4 * 3
    assert batch["query_pixel_values"].shape == (4, 3, 32, 32)
    decoded = preflmr.context_tokenizer.batch_decode(batch["context_input_ids"], skip_special_tokens=True)
    for i, example in enumerate(data.examples):
        assert decoded[3 * i].endswith(example.positives[0].text.lower())  # the positive leads its group
        negatives = decoded[3 * i + 1 : 3 * i + 3]
        assert all(not n.endswith(example.positives[0].text.lower()) for n in negatives)
    loss = preflmr(**batch, num_negative_examples=2).loss
    assert torch.isfinite(loss)


def test_collator_instructions_and_images(preflmr):
    example = ContrastiveExample(
        "who built it?", [Passage("p", "text")], instruction="Own instruction", key="k"
    )
    pool = [Passage(str(i), f"other {i}") for i in range(5)]
    sampled = ContrastiveCollator(preflmr, None, pool, 1, "sampled")
    texts = {sampled.query_text(example, random.Random(seed)) for seed in range(40)}
    assert texts <= {instruction.strip() + " who built it?" for instruction in PREFLMR_INSTRUCTIONS}
    assert len(texts) > 3
    assert ContrastiveCollator(preflmr, None, pool, 1, "dataset").query_text(example, random.Random(0)) == (
        "Own instruction: who built it?"
    )
    # no instruction: PreFLMR reads an empty one, so a ":" in the question would mask nothing
    assert ContrastiveCollator(preflmr, None, pool, 1, "none").query_text(example, random.Random(0)) == (
        ": who built it?"
    )
    black = ContrastiveCollator.query_image(example)
    assert black.size == (336, 336) and black.getbbox() is None  # all black


def test_deterministic_collator_repeats_its_batches(preflmr):
    pool = [Passage(str(i), f"passage number {i}") for i in range(30)]
    examples = [ContrastiveExample(f"q{i}", [pool[i]], key=f"k{i}") for i in range(4)]
    collate = ContrastiveCollator(preflmr, None, pool, 3, "sampled", deterministic=True)
    first, second = collate(examples), collate(examples)
    assert all(torch.equal(first[name], second[name]) for name in first)
