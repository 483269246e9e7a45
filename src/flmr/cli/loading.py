"""What the commands load: checkpoints, indexes and collections, named on the command line.

The argparse types here check values without importing torch or transformers (the parser runs
before them), the loaders import them when they run.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flmr.data import SAMPLE_COLLECTION, SAMPLE_COLLECTION_NAME
from flmr.extras import require_extra

if TYPE_CHECKING:
    from flmr.index import Index
    from flmr.retrieval import Retriever

# torch device strings the commands accept
_DEVICE = re.compile(r"(cpu|cuda|mps|xpu)(:\d+)?")

# Indexes built before checkpoints were recorded hold these instead of a name.
_UNRECORDED = {"", "None"}


def checkpoint_name(value: str) -> str:
    """A local checkpoint folder as an absolute path (so an index records where it is), else a hub name."""
    return str(Path(value).resolve()) if Path(value).exists() else value


def device_name(value: str) -> str:
    """argparse type of ``--device``: a torch device string such as ``cpu``, ``cuda`` or ``cuda:1``."""
    if not _DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device: use cpu, cuda, cuda:N or mps")
    return value


def positive_int(value: str) -> int:
    """argparse type of counts that must be at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def load_retriever(
    checkpoint: str, device: str, batch_size: int = 32, precision: str = "float32"
) -> Retriever:
    """Load ``checkpoint`` for encoding on ``device`` in ``precision``; the retriever records the checkpoint's name.

    Raises:
        ValueError: CUDA asked for and absent, or a checkpoint without its tokenizer folders (in the
            command line's words).
    """
    import torch

    from flmr.model.modeling_flmr import MissingTokenizerError
    from flmr.retrieval import Retriever

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    try:
        retriever = Retriever.from_pretrained(
            checkpoint, device=device, batch_size=batch_size, precision=precision
        )
    except MissingTokenizerError as error:
        raise ValueError(
            f"--checkpoint {checkpoint}: no {error.folder}/ folder with a vocabulary (vocab.txt or "
            "tokenizer.json); an FLMR checkpoint keeps its query and context tokenizers in query_tokenizer/ "
            "and context_tokenizer/: copy them from the checkpoint this one was trained from"
        ) from None
    # Indexes store this identity: with the name in it, `search` and `serve` find the checkpoint again.
    retriever.encoder_identity = retriever.encoder_identity.with_checkpoint(checkpoint)
    return retriever


def index_checkpoint(index: Index, override: str | None) -> str:
    """The checkpoint to search ``index`` with: ``override`` or the one the index was built with."""
    if override:
        return checkpoint_name(override)
    recorded = index.encoder.checkpoint
    if recorded is None or recorded in _UNRECORDED:
        raise ValueError(f"the index at {index.path} does not record its checkpoint: pass --checkpoint")
    return str(recorded)


def collection_source(collection: str | None, dataset: str | None, split: str) -> tuple[Any, Path | None]:
    """The collection named by ``--collection`` or ``--dataset``, and the folder its relative image paths start from."""
    if dataset is not None:
        return _load_dataset(dataset, split), Path(dataset).resolve() if Path(dataset).is_dir() else None
    assert collection is not None
    if collection == SAMPLE_COLLECTION_NAME and not os.path.isfile(collection):
        return SAMPLE_COLLECTION, SAMPLE_COLLECTION.parent
    path = Path(collection)
    if not path.is_file():
        raise FileNotFoundError(f"collection file {collection!r} does not exist")
    return path, path.resolve().parent


def _load_dataset(name: str, split: str) -> Any:
    datasets = require_extra("datasets", "evaluation", "--dataset")
    if Path(name).is_dir():
        loaded = datasets.load_from_disk(name)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(name, split=split)
