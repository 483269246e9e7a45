"""One in-process Ray cluster (2 CPUs, on loopback) for the whole distributed test run."""

import json

import numpy as np
import pytest
from PIL import Image

from flmr.data import SAMPLE_COLLECTION

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
