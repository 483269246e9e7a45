"""Contrastive finetuning of FLMR / PreFLMR retrievers (PyTorch Lightning).

Example (not run by the tests: it needs M2KR and a published checkpoint from the hub, and hours; see
``finetune`` for a run on the tiny checkpoint):
    >>> from flmr.training import FinetuneConfig, finetune, load_training_data
    >>> train = load_training_data("BByrneLab/multi_task_multi_modal_knowledge_retrieval_benchmark_M2KR",
    ...                            task="EVQA", split="train", image_root="/data/EVQA")  # doctest: +SKIP
    >>> finetune("LinWeizheDragon/PreFLMR_ViT-B", train, "saved_models", FinetuneConfig(max_steps=100))  # doctest: +SKIP
"""

from flmr._lazy import lazy_exports

# Imported on first use: the `flmr` command and the data helpers stay fast, and the modules that need
# PyTorch Lightning (the `training` extra) say so when it is missing.
_EXPORTS = {
    **dict.fromkeys(
        ("PREFLMR_INSTRUCTIONS", "ContrastiveCollator", "instruction_for", "pick_negatives"), ".batches"
    ),
    **dict.fromkeys(("FinetuneConfig",), ".config"),
    **dict.fromkeys(
        (
            "ContrastiveExample",
            "DatasetPassages",
            "Passage",
            "TrainingData",
            "load_training_data",
            "m2kr_training_data",
            "read_jsonl_examples",
        ),
        ".data",
    ),
    **dict.fromkeys(("TrainingConfigError", "TrainingDataError", "TrainingError"), ".errors"),
    **dict.fromkeys(("RetrievalValidator",), ".validation"),
    **dict.fromkeys(("finetune", "FinetuneResult"), ".trainer"),
    **dict.fromkeys(
        ("ContrastiveFinetuner", "ExamplesPerSecond", "SavePretrainedCheckpoints", "freeze_vision_encoders"),
        ".lightning_module",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, extra="training")

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
    "TrainingConfigError",
    "TrainingData",
    "TrainingDataError",
    "TrainingError",
    "finetune",
    "freeze_vision_encoders",
    "instruction_for",
    "load_training_data",
    "m2kr_training_data",
    "pick_negatives",
    "read_jsonl_examples",
]
