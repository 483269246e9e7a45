"""Finetuning settings (kept apart from the Lightning code, which is slow to import)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import TrainingConfigError

LOGGERS = ("csv", "tensorboard", "wandb", "none")
# where query instructions come from: sampled from the PreFLMR list, the dataset's own, or none
INSTRUCTION_MODES = ("sampled", "dataset", "none")


@dataclass
class FinetuneConfig:
    """Finetuning settings; the defaults follow the original's README command (``example_finetune_preflmr.py``)
    except ``precision`` (bf16 there; full precision here so CPUs without bf16 work) and ``max_steps``.

    Args:
        batch_size: queries per batch (each with 1 positive and ``num_negative_examples`` negatives).
        accumulate_grad_batches: batches per optimizer step.
        learning_rate, weight_decay: AdamW settings.
        warmup_steps: optimizer steps of linear warm-up; the rate then decays linearly to 0.
        max_steps: optimizer steps to train (-1: until ``max_epochs``).
        max_epochs: epochs to train (None: Lightning's default when ``max_steps`` is -1).
        num_negative_examples: negatives per query.
        instruction_mode: ``"sampled"`` (one of the original's 8 instructions per query), ``"dataset"``
            (each row's own), ``"none"``; ``"auto"``: sampled for checkpoints with a
            ``mask_instruction_token`` (PreFLMR), else the dataset's.
        freeze_vision_encoder: keep the vision encoders fixed (the original's ``--freeze_vit``).
        in_batch_negatives_from_all_gpus: in-batch negatives from every process under DDP.
        precision: Lightning precision: ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``, ``"bf16-true"``.
        doc_maxlen: passage token limit.
        val_check_interval: training batches between validations (an int) or a fraction of an epoch.
        val_batch_size: validation batch size.
        val_ks: the K of validation Recall@K.
        val_max_queries: validation queries used for Recall@K (None: all).
        num_sanity_val_steps: validation batches run before training, to fail early.
        accelerator, devices, strategy, num_nodes: Lightning hardware settings (``strategy=
            "ddp_find_unused_parameters_true"`` for several GPUs: frozen or unused modules).
        logger: ``"csv"``, ``"tensorboard"`` (needs ``tensorboard``), ``"wandb"`` (needs ``wandb``) or ``"none"``.
        wandb_project: project name for W&B.
        log_every_n_steps: how often metrics are logged.
        num_workers: dataloader worker processes (tokenization and image loading).
        seed: seed of every random choice.
        trainer_options: further ``pytorch_lightning.Trainer`` arguments (e.g. ``enable_progress_bar``).

    Raises:
        TrainingConfigError: an unknown ``logger``, or a batch size, ``accumulate_grad_batches`` or
            ``num_negative_examples`` out of range.
    """

    batch_size: int = 8
    accumulate_grad_batches: int = 8
    learning_rate: float = 5e-6
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_steps: int = -1
    max_epochs: int | None = None
    num_negative_examples: int = 4
    instruction_mode: str = "auto"
    freeze_vision_encoder: bool = False
    in_batch_negatives_from_all_gpus: bool = False
    precision: str = "32-true"
    doc_maxlen: int = 512
    val_check_interval: int | float = 2000
    val_batch_size: int = 16
    val_ks: Sequence[int] = (1, 5, 10)
    val_max_queries: int | None = None
    num_sanity_val_steps: int = 2
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    logger: str = "csv"
    wandb_project: str = "flmr-finetune"
    log_every_n_steps: int = 50
    num_workers: int = 0
    seed: int = 42
    trainer_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.logger not in LOGGERS:
            raise TrainingConfigError(f"logger must be one of {LOGGERS}, got {self.logger!r}")
        if self.batch_size < 1 or self.num_negative_examples < 0 or self.accumulate_grad_batches < 1:
            raise TrainingConfigError(
                "batch_size and accumulate_grad_batches must be positive, num_negative_examples >= 0"
            )
