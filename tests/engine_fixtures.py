"""Fixtures shared by the index and search tests: clustered unit-vector documents and a small writer."""

import pytest
import torch

from flmr.index import IndexWriter, train_codec, write_shards_manifest

DIM = 16


def clustered_documents(
    num_documents: int, dim: int = DIM, num_topics: int = 40, noise: float = 0.2, seed: int = 0
) -> list[torch.Tensor]:
    """Documents of 5..24 unit vectors, each a noisy copy of one of the document's 3 topics."""
    generator = torch.Generator().manual_seed(seed)
    topics = torch.nn.functional.normalize(torch.randn(num_topics, dim, generator=generator), dim=-1)
    documents = []
    for _ in range(num_documents):
        length = int(torch.randint(5, 25, (), generator=generator))
        own_topics = topics[torch.randint(0, num_topics, (3,), generator=generator)]
        directions = own_topics[torch.randint(0, 3, (length,), generator=generator)]
        vectors = directions + noise * torch.randn(length, dim, generator=generator) / dim**0.5
        documents.append(torch.nn.functional.normalize(vectors, dim=-1))
    return documents


@pytest.fixture(scope="session")
def make_documents():
    """The ``clustered_documents`` generator, for tests that need other collections."""
    return clustered_documents


@pytest.fixture(scope="module")
def documents() -> list[torch.Tensor]:
    return clustered_documents(300)


@pytest.fixture
def writer() -> IndexWriter:
    return IndexWriter(nbits=2, num_partitions=32, kmeans_iterations=8)


@pytest.fixture
def stored_fields() -> list[dict]:
    return [
        {
            "id": f"doc-{pid}",
            "text": f"text of {pid}",
            "image_path": f"images/{pid}.jpg",
            "metadata": {"n": pid},
        }
        for pid in range(300)
    ]


@pytest.fixture(scope="module")
def codec(documents):
    """One codec trained on a sample of ``documents``, shared by the shards of the sharded-index tests."""
    generator = torch.Generator().manual_seed(0)
    vectors = torch.cat(documents)
    sample = vectors[torch.randperm(vectors.shape[0], generator=generator)[:2000]]
    return train_codec(sample, nbits=2, num_partitions=32, kmeans_iterations=8)


@pytest.fixture(scope="module")
def fields(documents):
    """Stored fields (id and text) of every document of ``documents``."""
    return [{"id": f"doc-{pid}", "text": f"text of {pid}"} for pid in range(len(documents))]


SHARD_BOUNDS = [0, 110, 200, 300]  # three shards of 110, 90 and 100 documents


def write_shards(root, documents, fields, codec, bounds=SHARD_BOUNDS):
    """Shard indexes of ``documents[bounds[i]:bounds[i+1]]`` at root/shard-i, and their shards.json."""
    names = [f"shard-{number}" for number in range(len(bounds) - 1)]
    for name, start, stop in zip(names, bounds[:-1], bounds[1:], strict=True):
        writer = IndexWriter(nbits=2, codec=codec, store_vectors=False, show_progress=False)
        writer.write(root / name, documents[start:stop], documents=fields[start:stop])
    write_shards_manifest(root, names, note="three shards")
    return root
