"""One in-process Ray cluster (2 CPUs, on loopback) for the whole distributed test run."""

import json

import numpy as np
import pytest
from PIL import Image

from engine_fixtures import clustered_documents
from flmr.data import SAMPLE_COLLECTION
from flmr.distributed import EmbeddingParts
from flmr.distributed.embeddings import prepare_folder, write_part
from flmr.encoding.identity import EncoderIdentity

NUM_TEXT_DOCUMENTS = 56


@pytest.fixture(scope="session")
def ray_cluster():
    """Ray with 2 CPUs in this process; Serve and Ray are shut down at the end (never `ray stop`)."""
    ray = pytest.importorskip("ray")
    from flmr.distributed import connect

    connect("local", num_cpus=2)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def collection_file(tmp_path_factory):
    """A JSONL collection: 56 Debian package descriptions (extra fields become metadata) and 2 images."""
    folder = tmp_path_factory.mktemp("collection")
    samples = [json.loads(line) for line in SAMPLE_COLLECTION.read_text().splitlines()[:NUM_TEXT_DOCUMENTS]]
    rows = [
        {"id": row["id"], "text": row["text"], "package": row["id"], "summary": row["metadata"]["summary"]}
        for row in samples
    ]
    rng = np.random.default_rng(0)
    for name in ("red", "blue"):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8")).save(folder / f"{name}.png")
        rows.append({"id": f"image-{name}", "text": f"a {name} picture", "image_path": f"{name}.png"})
    path = folder / "collection.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ENCODER = EncoderIdentity.from_json({"checkpoint": "a-checkpoint", "digest": "0123abcd"})


def write_embeddings(root, documents, parts, skip=()):
    """An embeddings folder as distributed encoding writes it, one part per (start, stop) of ``parts``
    (those numbered in ``skip`` left out), with ids ``doc-<position>`` and metadata ``{"n": position}``."""
    prepare_folder(root, {"num_documents": len(documents), "max_length": 32})
    for number, (start, stop) in enumerate(parts):
        if number not in skip:
            positions = list(range(start, stop))
            fields = [{"id": f"doc-{p}", "text": f"text {p}", "metadata": {"n": p}} for p in positions]
            write_part(root, positions, documents[start:stop], fields, ENCODER)
    return EmbeddingParts(root)


@pytest.fixture(scope="session")
def make_embeddings():
    """The ``write_embeddings`` helper, for tests that need other embeddings folders."""
    return write_embeddings


@pytest.fixture(scope="session")
def vector_documents():
    """90 documents of clustered random unit vectors (dim 16): no model needed."""
    return clustered_documents(90, seed=3)


@pytest.fixture(scope="session")
def vector_embeddings(vector_documents, tmp_path_factory):
    """``vector_documents`` as an embeddings folder of three parts."""
    root = tmp_path_factory.mktemp("emb") / "embeddings"
    return write_embeddings(root, vector_documents, ((0, 25), (25, 60), (60, 90)))
