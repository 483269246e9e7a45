"""Contrastive finetuning of FLMR / PreFLMR retrievers (PyTorch Lightning).

Example:
    >>> from flmr.training import FinetuneConfig, finetune, load_training_data
    >>> train = load_training_data("m2kr_local", task="EVQA", split="train", image_root="/data/EVQA")  # doctest: +SKIP
    >>> finetune("LinWeizheDragon/PreFLMR_ViT-B", train, "saved_models", FinetuneConfig(max_steps=100))  # doctest: +SKIP
"""

import importlib
from typing import Any

from .batches import PREFLMR_INSTRUCTIONS, ContrastiveCollator, instruction_for, pick_negatives
from .config import FinetuneConfig
from .data import (
    ContrastiveExample,
    DatasetPassages,
    Passage,
    TrainingData,
    TrainingDataError,
    load_training_data,
    m2kr_training_data,
    read_jsonl_examples,
)
from .validation import RetrievalValidator

# These need PyTorch Lightning, which takes seconds to import: loaded on first use, so that the
# `flmr` command and the data helpers stay fast.
_LIGHTNING_EXPORTS = {
    "finetune": ".trainer",
    "FinetuneResult": ".trainer",
    "ContrastiveFinetuner": ".lightning_module",
    "ExamplesPerSecond": ".lightning_module",
    "SavePretrainedCheckpoints": ".lightning_module",
    "freeze_vision_encoders": ".lightning_module",
}


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_EXPORTS:
        return getattr(importlib.import_module(_LIGHTNING_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PREFLMR_INSTRUCTIONS",
    "ContrastiveCollator",
    "ContrastiveExample",
    "ContrastiveFinetuner",
    "DatasetPassages",
    "ExamplesPerSecond",
    "FinetuneConfig",
    "FinetuneResult",
    "Passage",
    "RetrievalValidator",
    "SavePretrainedCheckpoints",
    "TrainingData",
    "TrainingDataError",
    "finetune",
    "freeze_vision_encoders",
    "instruction_for",
    "load_training_data",
    "m2kr_training_data",
    "pick_negatives",
    "read_jsonl_examples",
]
