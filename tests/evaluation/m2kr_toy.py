"""A tiny M2KR-layout dataset built on the fly (saved with ``datasets.save_to_disk``), and test helpers."""

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

# The datasets hub is unreachable in tests; datasets reads this when first imported.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

# One subject per passage, so that a question names its positive passage: a learnable task.
SUBJECTS = [
    "eagle",
    "tower",
    "bridge",
    "violin",
    "glacier",
    "temple",
    "falcon",
    "canyon",
    "statue",
    "harbor",
    "piano",
    "castle",
    "river",
    "forest",
    "island",
    "volcano",
    "desert",
    "garden",
    "palace",
    "market",
    "church",
    "museum",
    "lighthouse",
    "waterfall",
    "meadow",
    "valley",
    "cathedral",
    "fountain",
    "library",
    "stadium",
    "monastery",
    "orchard",
    "vineyard",
    "lagoon",
    "pyramid",
    "windmill",
    "railway",
    "airport",
    "theatre",
    "observatory",
]
COLOURS = ["red", "blue", "green", "golden", "silver", "purple", "orange", "white", "black", "yellow"]
INSTRUCTION = "Using the provided image, obtain documents that address the subsequent question"


def passage_text(subject: str, colour: str) -> str:
    return f"The {subject} in this collection is {colour} and famous."


def toy_rows(num_queries: int, num_passages: int, seed: int, images: bool) -> tuple[list[dict], list[dict]]:
    """Passages "The <subject> ... is <colour>" (at most 40); query i asks the colour of one subject."""
    rng = random.Random(seed)
    pairs = [(subject, rng.choice(COLOURS)) for subject in rng.sample(SUBJECTS, num_passages)]
    passages = [
        {"passage_id": f"p{seed}_{i}", "passage_content": passage_text(*pairs[i]), "language": "en"}
        for i in range(num_passages)
    ]
    queries = []
    for i in range(num_queries):
        target = rng.randrange(num_passages)
        subject, colour = pairs[target]
        queries.append(
            {
                "question_id": f"q{seed}_{i}",
                "question": f"What colour is the {subject}?",
                "instruction": INSTRUCTION if i % 3 else f"{INSTRUCTION}:",
                "img_path": f"img_{i % 4}.png" if images and i % 2 == 0 else None,
                "pos_item_ids": [passages[target]["passage_id"]],
                "pos_item_contents": [passages[target]["passage_content"]],
                "answers": [colour.upper(), f" {colour} "],
            }
        )
    return queries, passages


def build_toy_m2kr(
    root: Path, task: str = "EVQA", num_queries: int = 12, num_passages: int = 40, images: bool = True
) -> Path:
    """``<root>/<task>_data`` (train/valid/test) and ``<root>/<task>_passages``; images under ``root/images``."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.new("RGB", (40, 30), color=(60 * i, 255 - 50 * i, 90)).save(image_dir / f"img_{i}.png")
    query_splits, passage_splits = {}, {}
    for seed, split in enumerate(("train", "valid", "test")):
        queries, passages = toy_rows(num_queries, num_passages, seed, images)
        query_splits[split] = datasets.Dataset.from_list(queries)
        passage_splits[f"{split}_passages"] = datasets.Dataset.from_list(passages)
    datasets.DatasetDict(query_splits).save_to_disk(str(root / f"{task}_data"))
    datasets.DatasetDict(passage_splits).save_to_disk(str(root / f"{task}_passages"))
    return root


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Tiny models run many small ops: one thread avoids OpenMP threads waiting on each other on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_torch_thread():
    with single_torch_thread():
        yield
