"""Test fixtures; plain helpers live in helpers.py."""

import os

import pytest
import torch

# Tests never reach the model hub: everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import flmr  # noqa: E402
from helpers import minilm_folder  # noqa: E402


@pytest.fixture(scope="session")
def query_tokenizer() -> flmr.FLMRQueryEncoderTokenizer:
    return flmr.FLMRQueryEncoderTokenizer.from_pretrained(minilm_folder())


@pytest.fixture(scope="session")
def context_tokenizer() -> flmr.FLMRContextEncoderTokenizer:
    return flmr.FLMRContextEncoderTokenizer.from_pretrained(minilm_folder())


@pytest.fixture
def make_model(query_tokenizer, context_tokenizer):
    """Build a tiny, randomly initialised model (seeded) in eval mode."""

    def build(config: flmr.FLMRConfig, seed: int = 0) -> flmr.FLMRModelForRetrieval:
        torch.manual_seed(seed)
        model = flmr.FLMRModelForRetrieval(
            config, query_tokenizer=query_tokenizer, context_tokenizer=context_tokenizer
        )
        return model.eval()

    return build
