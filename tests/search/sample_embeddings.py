"""The shipped sample collection (200 Debian package texts) as real MiniLM token embeddings, indexed.

Documents get deterministic metadata to filter on: ``lang`` (en/de/fr by pid % 3), ``year``
(1990 + pid % 30), ``tags`` (a list: "even"/"odd", plus "five" for multiples of 5) and, for every
seventh document only, ``rare``.
"""

import json
from functools import cache
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from flmr.data import SAMPLE_COLLECTION, SAMPLE_QUERIES
from flmr.index import Index, IndexWriter
from helpers import minilm_folder


def sample_metadata(pid: int) -> dict:
    metadata = {
        "lang": ("en", "de", "fr")[pid % 3],
        "year": 1990 + pid % 30,
        "tags": ["even" if pid % 2 == 0 else "odd", *(["five"] if pid % 5 == 0 else [])],
    }
    if pid % 7 == 0:
        metadata["rare"] = True
    return metadata


def sample_records() -> list[dict]:
    lines = Path(SAMPLE_COLLECTION).read_text().splitlines()
    return [
        {"id": row["id"], "text": row["text"], "metadata": sample_metadata(pid)}
        for pid, row in enumerate(json.loads(line) for line in lines)
    ]


@cache
def _minilm() -> tuple:
    folder = minilm_folder()
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


@torch.inference_mode()
def encode(texts: list[str], max_tokens: int) -> list[torch.Tensor]:
    """Per-text L2-normalised MiniLM token vectors (384 dims), padding dropped."""
    tokenizer, model = _minilm()
    encoded = []
    for start in range(0, len(texts), 50):
        batch = tokenizer(
            texts[start : start + 50],
            truncation=True,
            max_length=max_tokens,
            padding=True,
            return_tensors="pt",
        )
        hidden = torch.nn.functional.normalize(model(**batch).last_hidden_state, dim=-1)
        encoded += [hidden[i, : int(n)] for i, n in enumerate(batch["attention_mask"].sum(1))]
    return encoded


def encode_queries(texts: list[str]) -> torch.Tensor:
    """(num_queries, 32, 384) zero-padded query vectors, like FLMR's masked query positions."""
    queries = torch.zeros(len(texts), 32, 384)
    for row, vectors in enumerate(encode(texts, 32)):
        queries[row, : len(vectors)] = vectors
    return queries


@cache
def sample_document_vectors() -> tuple[torch.Tensor, ...]:
    return tuple(encode([record["text"] for record in sample_records()], 96))


def build_sample_index(path: Path) -> Index:
    writer = IndexWriter(nbits=2, num_partitions=64, kmeans_iterations=8)
    return writer.write(path, list(sample_document_vectors()), documents=sample_records())


QUERY_TEXTS = SAMPLE_QUERIES
