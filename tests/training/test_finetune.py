"""Finetuning tiny checkpoints on a learnable toy task: loss, checkpoints, validation, frozen vision."""

import pytest
import pytorch_lightning as pl
import torch

import helpers
from evaluation.m2kr_toy import build_toy_m2kr, one_torch_thread, single_torch_thread  # noqa: F401 - a fixture
from flmr import FLMRConfig, FLMRModelForRetrieval
from flmr.model.image_processing import load_image_processor
from flmr.training import (
    ContrastiveCollator,
    ContrastiveFinetuner,
    FinetuneConfig,
    finetune,
    load_training_data,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = build_toy_m2kr(tmp_path_factory.mktemp("m2kr"), num_queries=12, num_passages=24)
    train = load_training_data(root, task="EVQA", split="train", image_root=root / "images")
    valid = load_training_data(root, task="EVQA", split="valid", image_root=root / "images")
    return train, valid


def fixed_batch_loss(model, train):
    collate = ContrastiveCollator(
        model, load_image_processor(model.config), train.passages, 2, "sampled", deterministic=True
    )
    model.eval()
    with torch.no_grad():
        return float(model(**collate(train.examples), num_negative_examples=2).loss)


def tiny_preflmr_without_dropout():
    """Dropout 0.1 in a 24-wide model drowns what a few dozen steps learn; real models keep theirs."""
    config = FLMRConfig.from_pretrained(helpers.PREFLMR_TINY)
    config.text_config.hidden_dropout_prob = 0.0
    config.text_config.attention_probs_dropout_prob = 0.0
    return FLMRModelForRetrieval.from_pretrained(helpers.PREFLMR_TINY, config=config)


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    """One run: 30 optimizer steps, a validation (loss + Recall@K) every 15 training batches."""
    train, valid = toy
    with single_torch_thread():  # module fixtures run before the function-scoped one_torch_thread
        return train_once(train, valid, tmp_path_factory.mktemp("finetuned"))


def train_once(train, valid, output_dir):
    model = tiny_preflmr_without_dropout()
    loss_before = fixed_batch_loss(model, train)
    config = FinetuneConfig(
        batch_size=4,
        accumulate_grad_batches=1,
        learning_rate=3e-3,
        warmup_steps=3,
        max_steps=30,
        num_negative_examples=2,
        val_check_interval=15,
        val_ks=(1, 5),
        num_sanity_val_steps=1,
        trainer_options=QUIET,
    )
    result = finetune(model, train, output_dir, config, validation_data=valid)
    return model, result, loss_before, output_dir


def test_a_few_steps_lower_the_loss(trained, toy):
    model, result, loss_before, _ = trained
    assert result.global_step == 30
    assert fixed_batch_loss(model, toy[0]) < 0.85 * loss_before


def test_checkpoints_after_each_validation_and_at_the_end(trained):
    _, result, _, output_dir = trained
    assert result.checkpoints == [output_dir / "model_step_15", output_dir / "model_step_30"]
    for checkpoint in result.checkpoints:
        assert {"config.json", "model.safetensors", "query_tokenizer", "context_tokenizer"} <= {
            path.name for path in checkpoint.iterdir()
        }


def test_saved_checkpoint_reloads_to_identical_outputs(trained):
    model, result, _, _ = trained
    reloaded = FLMRModelForRetrieval.from_pretrained(result.checkpoints[-1]).eval()
    model.eval()
    queries = model.query_tokenizer(
        ["Using the image, find documents that answer: what colour is the eagle?"]
    )
    pixel_values = torch.rand(1, 3, 32, 32)
    documents = model.context_tokenizer(["The eagle in this collection is red and famous."])
    with torch.no_grad():
        expected_q = model.query(**queries, pixel_values=pixel_values).late_interaction_output
        actual_q = reloaded.query(**queries, pixel_values=pixel_values).late_interaction_output
        expected_d = model.doc(**documents).late_interaction_output
        actual_d = reloaded.doc(**documents).late_interaction_output
    assert torch.equal(expected_q, actual_q) and torch.equal(expected_d, actual_d)


def test_validation_metrics_and_throughput_are_reported(trained):
    _, result, _, output_dir = trained
    assert {"val/loss", "val/Recall@1", "val/Recall@5", "train/loss"} <= set(result.metrics)
    assert 0.0 <= result.metrics["val/Recall@1"] <= result.metrics["val/Recall@5"] <= 1.0
    assert result.examples_per_second > 0
    assert (output_dir / "logs" / "version_0" / "metrics.csv").is_file()


class CountBatches(pl.Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, *args):
        self.batches += 1


def test_frozen_vision_encoder_bf16_and_gradient_accumulation(toy, tmp_path):
    train, _ = toy
    model = FLMRModelForRetrieval.from_pretrained(helpers.PREFLMR_TINY)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = FinetuneConfig(
        batch_size=3,
        accumulate_grad_batches=2,
        learning_rate=1e-2,
        warmup_steps=0,
        max_steps=2,
        num_negative_examples=1,
        freeze_vision_encoder=True,
        precision="bf16-mixed",
        logger="none",
        trainer_options=QUIET,
    )
    counter = CountBatches()
    result = finetune(model, train, tmp_path, config, callbacks=[counter])
    assert (result.global_step, counter.batches) == (2, 4)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert not any("vision_encoder" in name for name in changed)
    assert any(name.startswith("context_text_encoder") for name in changed)
    assert any(name.startswith("transformer_mapping") for name in changed)


def test_in_batch_negatives_setting_reaches_the_model(monkeypatch):
    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, **inputs):
            seen.update(inputs)
            return type("Output", (), {"loss": torch.tensor(0.0)})()

    module = ContrastiveFinetuner(Recorder(), num_negative_examples=3, in_batch_negatives_from_all_gpus=True)
    module._loss({"query_input_ids": torch.zeros(1, 2)})
    assert seen["in_batch_negatives_from_all_gpus"] and seen["use_in_batch_negatives"]
    assert seen["num_negative_examples"] == 3
