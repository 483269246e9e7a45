"""Shared by the serving tests: a tiny index with image documents, images, a uvicorn server in a thread."""

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from flmr.data import SAMPLE_COLLECTION
from flmr.index import Index
from flmr.retrieval import Retriever
from helpers import FLMR_TINY

TEXT_DOCUMENTS = 10
# Documents whose image file is replaced after indexing, to check what the service then serves.
IMAGE_DOCUMENTS = {
    "red-square": (220, 30, 30),
    "blue-square": (30, 60, 220),
    "swapped": (0, 160, 0),
    "linked": (90, 90, 90),
    "gone": (200, 200, 0),
}


def make_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Path:
    """A solid image with a little noise (so JPEG and PNG encoders have something to encode)."""
    noise = np.random.default_rng(0).integers(-12, 12, (size[1], size[0], 3))
    pixels = np.clip(np.array(color)[None, None, :] + noise, 0, 255).astype("uint8")
    Image.fromarray(pixels).save(path)
    return path


def same_ranking(results: list[dict], expected: list[dict]) -> bool:
    """The same documents in the same order, scores equal to float rounding: a query searched in a batch
    goes through matrix products of other shapes than alone, which round differently (1e-6 relative)."""
    return [r["pid"] for r in results] == [e["pid"] for e in expected] and all(
        r == {**e, "score": r["score"]} and abs(r["score"] - e["score"]) <= 1e-5 * abs(e["score"])
        for r, e in zip(results, expected, strict=True)
    )


def load_retriever() -> Retriever:
    retriever = Retriever.from_pretrained(FLMR_TINY)
    retriever.encoder_identity = retriever.encoder_identity.with_checkpoint(str(FLMR_TINY))
    return retriever


def build_index(folder: Path, retriever: Retriever, break_images: bool = True) -> tuple[Index, Path]:
    """An index of 10 sample passages and 5 image documents; returns it and its image folder.

    With ``break_images``, after indexing the image of "swapped" becomes a text file, "linked" a
    symbolic link to an image outside the image folder, and "gone" is deleted.
    """
    images = folder / "images"
    images.mkdir(parents=True)
    rows = [json.loads(line) for line in SAMPLE_COLLECTION.read_text().splitlines()[:TEXT_DOCUMENTS]]
    for name, color in IMAGE_DOCUMENTS.items():
        suffix = ".jpg" if name == "blue-square" else ".png"
        path = make_image(images / f"{name}{suffix}", color)
        rows.append({"id": name, "text": f"a picture of a {name.replace('-', ' ')}", "image_path": str(path)})
    index = retriever.index(rows, folder / "index", nbits=2, show_progress=False, doc_maxlen=64)
    if break_images:
        _break_images(folder, images)
    return index, images


def _break_images(folder: Path, images: Path) -> None:
    (images / "swapped.png").write_text("not an image: a secret")
    outside = make_image(folder / "outside.png", (1, 2, 3))
    (images / "linked.png").unlink()
    (images / "linked.png").symlink_to(outside)
    (images / "gone.png").unlink()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(app, timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
