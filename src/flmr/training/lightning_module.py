"""The PyTorch Lightning pieces of finetuning: the module, checkpointing and throughput callbacks."""

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import get_scheduler

from flmr.model import FLMRModelForRetrieval

from .validation import RetrievalValidator


def freeze_vision_encoders(model: FLMRModelForRetrieval) -> int:
    """Stop gradients into the query and context vision encoders; returns how many tensors were frozen.

    The mapping network, projections and text encoder keep training (the original's ``--freeze_vit``).
    """
    frozen = 0
    for name in ("context_vision_encoder", "query_vision_encoder"):
        module = getattr(model, name, None)
        if module is None:
            continue
        for parameter in module.parameters():
            frozen += int(parameter.requires_grad)
            parameter.requires_grad_(False)
    return frozen


class ContrastiveFinetuner(pl.LightningModule):
    r"""Contrastive finetuning of an FLMR retriever with in-batch negatives.

    Each query is scored against every document of the batch (its positive, its negatives and the
    other queries' documents; with ``in_batch_negatives_from_all_gpus`` those of every process) and
    cross-entropy picks its positive. AdamW with linear warm-up then linear decay over
    ``trainer.estimated_stepping_batches`` optimizer steps, stepped every step.

    Args:
        model: the retriever to train.
        learning_rate, weight_decay, warmup_steps: optimiser settings.
        num_negative_examples: negatives per query in each batch.
        in_batch_negatives_from_all_gpus: gather queries and documents across processes for the loss.
        validator: computes validation Recall@K after each validation run (on the main process).

    Example:
        >>> module = ContrastiveFinetuner(model, learning_rate=5e-6, warmup_steps=100)
        >>> module.model is model, module.learning_rate
        (True, 5e-06)

    It trains under a ``pl.Trainer`` with the loaders of [`finetune`], which builds both.
    """

    def __init__(
        self,
        model: FLMRModelForRetrieval,
        learning_rate: float = 5e-6,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        num_negative_examples: int = 4,
        in_batch_negatives_from_all_gpus: bool = False,
        validator: RetrievalValidator | None = None,
    ):
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.num_negative_examples = num_negative_examples
        self.in_batch_negatives_from_all_gpus = in_batch_negatives_from_all_gpus
        self.validator = validator

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(
            **batch,
            use_in_batch_negatives=True,
            in_batch_negatives_from_all_gpus=self.in_batch_negatives_from_all_gpus,
            num_negative_examples=self.num_negative_examples,
        ).loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        batch_size = batch["query_input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log(
            "val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["query_input_ids"].shape[0]
        )

    def on_validation_epoch_end(self) -> None:
        if self.validator is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        for name, value in self.validator(self.model).items():
            self.log(f"val/{name}", value, prog_bar=name.endswith("@5"), rank_zero_only=True)

    def configure_optimizers(self) -> dict[str, Any]:
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)
        scheduler = get_scheduler(
            "linear",
            optimizer,
            num_warmup_steps=self.warmup_steps,
            num_training_steps=int(self.trainer.estimated_stepping_batches),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class SavePretrainedCheckpoints(pl.Callback):
    """After every validation run and at the end of training, ``save_pretrained`` the model to
    ``<directory>/model_step_<optimizer step>`` (the published layout with both tokenizers)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.saved: list[Path] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._save(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, pl_module)

    def _save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.directory / f"model_step_{trainer.global_step}"
        if path in self.saved:
            return
        if trainer.is_global_zero:
            pl_module.model.save_pretrained(path)
        self.saved.append(path)
        trainer.strategy.barrier("save_pretrained")


class ExamplesPerSecond(pl.Callback):
    """Training throughput, data preparation included and validation excluded; logged as
    ``train/examples_per_second``. The first batch (start-up) is not counted."""

    def __init__(self) -> None:
        self.examples = 0
        self.seconds = 0.0
        self._last: float | None = None

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.examples += batch["query_input_ids"].shape[0] * trainer.world_size
            self.seconds += now - self._last
            pl_module.log("train/examples_per_second", self.examples_per_second, batch_size=1)
        self._last = now

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None  # the next interval would include validation
