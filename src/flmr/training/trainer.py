"""``finetune``: contrastive finetuning of an FLMR / PreFLMR checkpoint with PyTorch Lightning."""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from flmr.model import FLMRModelForRetrieval
from flmr.model.image_processing import resolve_image_processor

from .batches import ContrastiveCollator
from .config import FinetuneConfig
from .data import TrainingData
from .lightning_module import (
    ContrastiveFinetuner,
    ExamplesPerSecond,
    SavePretrainedCheckpoints,
    freeze_vision_encoders,
)
from .validation import RetrievalValidator


@dataclass
class FinetuneResult:
    """What a finetuning run produced: the saved checkpoints (last one last) and its figures."""

    checkpoints: list[Path]
    global_step: int
    examples_per_second: float
    metrics: dict[str, float]


def finetune(
    model: FLMRModelForRetrieval | str | os.PathLike,
    train_data: TrainingData,
    output_dir: str | os.PathLike,
    config: FinetuneConfig | None = None,
    validation_data: TrainingData | None = None,
    image_processor: Any = None,
    callbacks: Sequence[pl.Callback] = (),
) -> FinetuneResult:
    """Finetune ``model`` contrastively; checkpoints go to ``<output_dir>/model_step_<N>``.

    Args:
        model: an [`FLMRModelForRetrieval`] or a checkpoint folder / hub name.
        train_data: examples and the pool random negatives come from (see [`load_training_data`]).
        output_dir: checkpoints and logs.
        config: [`FinetuneConfig`].
        validation_data: examples and the corpus for validation loss and Recall@K (optional).
        image_processor: a processor, or its name / folder (default: the checkpoint's vision model's).
        callbacks: further Lightning callbacks.

    Example (one step on the tiny checkpoint, 8 sample documents as queries' positives):
        >>> from flmr.training import load_training_data
        >>> import json
        >>> rows = [{"query": f"what is {d.id}?", "positives": [{"id": d.id, "text": d.text}]} for d in docs]
        >>> with open("train.jsonl", "w") as file:
        ...     for row in rows:
        ...         print(json.dumps(row), file=file)
        >>> config = FinetuneConfig(batch_size=4, accumulate_grad_batches=1, max_steps=1, num_negative_examples=1,
        ...                         logger="none", trainer_options={"enable_progress_bar": False,
        ...                                                         "enable_model_summary": False})
        >>> result = finetune("my_checkpoint", load_training_data("train.jsonl"), "saved_models", config)
        >>> result.global_step, [path.name for path in result.checkpoints]
        (1, ['model_step_1'])
        >>> FLMRModelForRetrieval.from_pretrained(result.checkpoints[-1]).config.dim
        16
    """
    config = config or FinetuneConfig()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    if not isinstance(model, FLMRModelForRetrieval):
        model = FLMRModelForRetrieval.from_pretrained(model)
    model.train()
    if config.freeze_vision_encoder:
        freeze_vision_encoders(model)
    processor = resolve_image_processor(model.config, image_processor)
    instruction_mode = _instruction_mode(config.instruction_mode, model)
    collator = ContrastiveCollator(
        model,
        processor,
        train_data.passages,
        config.num_negative_examples,
        instruction_mode,
        config.doc_maxlen,
    )
    train_loader = DataLoader(
        train_data.examples,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collator,
        num_workers=config.num_workers,
    )
    valid_loader, validator = _validation(model, processor, instruction_mode, validation_data, config)
    module = ContrastiveFinetuner(
        model,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        num_negative_examples=config.num_negative_examples,
        in_batch_negatives_from_all_gpus=config.in_batch_negatives_from_all_gpus,
        validator=validator,
    )
    saver, throughput = SavePretrainedCheckpoints(output_dir), ExamplesPerSecond()
    trainer = _trainer(
        config, output_dir, [saver, throughput, *callbacks], has_validation=valid_loader is not None
    )
    trainer.fit(module, train_loader, valid_loader)
    return FinetuneResult(
        checkpoints=saver.saved,
        global_step=trainer.global_step,
        examples_per_second=throughput.examples_per_second,
        metrics={name: float(value) for name, value in trainer.logged_metrics.items()},
    )


def _instruction_mode(mode: str, model: FLMRModelForRetrieval) -> str:
    if mode != "auto":
        return mode
    return "sampled" if model.config.mask_instruction_token else "dataset"


def _validation(
    model: FLMRModelForRetrieval,
    processor: Any,
    instruction_mode: str,
    data: TrainingData | None,
    config: FinetuneConfig,
) -> tuple[DataLoader | None, RetrievalValidator | None]:
    if data is None:
        return None, None
    collator = ContrastiveCollator(
        model,
        processor,
        data.passages,
        config.num_negative_examples,
        instruction_mode,
        config.doc_maxlen,
        deterministic=True,
    )
    loader = DataLoader(
        data.examples, batch_size=config.val_batch_size, collate_fn=collator, num_workers=config.num_workers
    )
    validator = RetrievalValidator(
        data, collator, config.val_ks, config.val_batch_size, config.val_max_queries
    )
    return loader, validator


def _trainer(
    config: FinetuneConfig, output_dir: str | os.PathLike, callbacks: list[pl.Callback], has_validation: bool
) -> pl.Trainer:
    # An int interval counts training batches across epochs, as in the original's Lightning setup.
    across_epochs = has_validation and isinstance(config.val_check_interval, int)
    options: dict[str, Any] = {
        "accelerator": config.accelerator,
        "devices": config.devices,
        "strategy": config.strategy,
        "num_nodes": config.num_nodes,
        "precision": config.precision,
        "max_steps": config.max_steps,
        "max_epochs": config.max_epochs,
        "accumulate_grad_batches": config.accumulate_grad_batches,
        "val_check_interval": config.val_check_interval if has_validation else None,
        "check_val_every_n_epoch": None if across_epochs else 1,
        "num_sanity_val_steps": config.num_sanity_val_steps if has_validation else 0,
        "log_every_n_steps": config.log_every_n_steps,
        "logger": _logger(config, output_dir),
        "callbacks": callbacks,
        "enable_checkpointing": False,  # checkpoints are save_pretrained folders, not Lightning .ckpt files
        "default_root_dir": str(output_dir),
    }
    options.update(config.trainer_options)
    return pl.Trainer(**options)


def _logger(config: FinetuneConfig, output_dir: str | os.PathLike) -> Any:
    if config.logger == "none":
        return False
    if config.logger == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(str(output_dir), name="logs")
    if config.logger == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        return WandbLogger(project=config.wandb_project, save_dir=str(output_dir))
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(str(output_dir), name="logs")
