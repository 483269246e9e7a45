"""Finetuning data: queries with positive and negative passages, from M2KR rows or a JSONL file.

JSONL rows::

    {"query": "who designed it?", "instruction": "Using the image, find documents answering:",
     "image_path": "img/1.jpg", "positives": ["The tower was designed by ..."],
     "negatives": [{"id": "p9", "text": "..."}]}

``query`` may be called ``question``; ``instruction``, ``image_path``, ``negatives`` and ``id`` are
optional; a passage is a string (its text is its id) or ``{"id", "text"}``. Queries short of negatives
get random ones from the pool of every passage of the file.
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

from flmr.data.m2kr import load_m2kr_split

from .errors import TrainingDataError


@dataclass(frozen=True)
class Passage:
    """A passage: its id (what Recall@K compares) and its text."""

    id: str
    text: str


@dataclass
class ContrastiveExample:
    """One training query: its text parts, image (an absolute or relative path, or None) and passages."""

    question: str
    positives: list[Passage]
    negatives: list[Passage] = field(default_factory=list)
    instruction: str | None = None
    image_path: str | None = None
    key: str = ""


class DatasetPassages(Sequence[Passage]):
    """A ``datasets.Dataset`` of M2KR passages seen as a sequence of [`Passage`] (read row by row)."""

    def __init__(self, dataset: "datasets.Dataset"):
        self.dataset = dataset.select_columns(["passage_id", "passage_content"])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> Passage:  # type: ignore[override]
        row = self.dataset[position]
        return Passage(str(row["passage_id"]), row["passage_content"])


@dataclass
class TrainingData:
    """Examples and the passages around them: the negative pool (training) or the corpus (validation)."""

    examples: list[ContrastiveExample]
    passages: Sequence[Passage]


def load_training_data(
    source: str | os.PathLike,
    task: str | None = None,
    split: str = "train",
    image_root: str | os.PathLike | None = None,
    revision: str | None = None,
) -> TrainingData:
    """Read a JSONL file, or the ``split`` of an M2KR ``task`` (local folder or hub name).

    For M2KR the passages are the ``<split>_passages`` corpus: random negatives for training (the
    rows carry no hard negatives), the ranked corpus for validation.

    Example (``docs`` are 8 documents of the sample collection):
        >>> import json
        >>> rows = [{"query": f"what is {d.id}?", "positives": [{"id": d.id, "text": d.text}]} for d in docs]
        >>> with open("train.jsonl", "w") as file:
        ...     for row in rows:
        ...         print(json.dumps(row), file=file)
        >>> data = load_training_data("train.jsonl", image_root="images")
        >>> len(data.examples), len(data.passages), data.examples[0].question
        (8, 8, 'what is vim?')

    From M2KR (not run by the tests: it needs the dataset, from the hub or a local copy):
        >>> data = load_training_data("BByrneLab/multi_task_multi_modal_knowledge_retrieval_benchmark_M2KR",
        ...                           task="EVQA", split="train", image_root="/data/EVQA")  # doctest: +SKIP
    """
    if task is None:
        return read_jsonl_examples(source, image_root)
    return m2kr_training_data(source, task, split, image_root, revision)


def read_jsonl_examples(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> TrainingData:
    """Examples of a JSONL file (see the module docstring); the pool is every passage they name."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"training file {path} does not exist")
    examples = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                examples.append(_jsonl_example(line, f"{path}:{line_number}", image_root))
    if not examples:
        raise TrainingDataError(f"{path} holds no examples")
    pool = {p.id: p for example in examples for p in (*example.positives, *example.negatives)}
    return TrainingData(examples, list(pool.values()))


def _jsonl_example(line: str, where: str, image_root: str | os.PathLike | None) -> ContrastiveExample:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise TrainingDataError(f"{where} is not JSON: {error}") from error
    question = row.get("query", row.get("question"))
    if not isinstance(question, str):
        raise TrainingDataError(f"{where}: 'query' must be a string")
    positives = [_passage(item, where) for item in row.get("positives") or []]
    if not positives:
        raise TrainingDataError(f"{where}: 'positives' must list at least one passage")
    return ContrastiveExample(
        question=question,
        positives=positives,
        negatives=[_passage(item, where) for item in row.get("negatives") or []],
        instruction=row.get("instruction"),
        image_path=_resolve(row.get("image_path"), image_root),
        key=str(row.get("id", where)),
    )


def _passage(item: Any, where: str) -> Passage:
    if isinstance(item, str):
        return Passage(item, item)
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return Passage(str(item.get("id", item["text"])), item["text"])
    raise TrainingDataError(f"{where}: a passage must be a string or {{'id', 'text'}}, got {item!r}")


def _resolve(image_path: str | None, image_root: str | os.PathLike | None) -> str | None:
    if not image_path:
        return None
    return os.path.join(image_root, image_path) if image_root is not None else image_path


def m2kr_training_data(
    source: str | os.PathLike,
    task: str,
    split: str = "train",
    image_root: str | os.PathLike | None = None,
    revision: str | None = None,
) -> TrainingData:
    """Examples of an M2KR split: positives from ``pos_item_contents`` (or looked up by id in the corpus)."""
    data = load_m2kr_split(source, task, split, revision)
    corpus = DatasetPassages(data.passages)
    has_contents = "pos_item_contents" in data.queries.column_names
    text_of_id = None if has_contents else dict(zip(*_id_text_columns(data.passages), strict=True))
    columns = ["question_id", "question", "img_path", "pos_item_ids"]
    columns += [c for c in ("instruction", "pos_item_contents") if c in data.queries.column_names]
    examples = []
    for row in data.queries.select_columns(columns).to_list():
        ids = [str(i) for i in row["pos_item_ids"] or []]
        texts = row["pos_item_contents"] if has_contents else [text_of_id.get(i) for i in ids]
        positives = [Passage(i, t) for i, t in zip(ids, texts, strict=False) if t is not None]
        if not positives:
            raise TrainingDataError(
                f"{task}_data/{split} question {row['question_id']!r} has no positive passage"
            )
        examples.append(
            ContrastiveExample(
                question=row["question"] or "",
                positives=positives,
                instruction=row.get("instruction"),
                image_path=_resolve(row["img_path"], image_root),
                key=str(row["question_id"]),
            )
        )
    return TrainingData(examples, corpus)


def _id_text_columns(passages: "datasets.Dataset") -> tuple[list[str], list[str]]:
    columns = passages.select_columns(["passage_id", "passage_content"]).to_dict()
    return [str(i) for i in columns["passage_id"]], columns["passage_content"]


__all__ = [
    "ContrastiveExample",
    "DatasetPassages",
    "Passage",
    "TrainingData",
    "TrainingDataError",
    "load_training_data",
    "m2kr_training_data",
    "read_jsonl_examples",
]
