"""Tiny randomly initialised checkpoints, to run the whole chain (index, search, serve) offline in seconds.

Their weights are random, so their rankings mean nothing: they show that the commands work, and the
tests use them. The tokenizers are the published checkpoints' own (bert-base-uncased WordPiece, shipped
in ``flmr.data``), so texts tokenize exactly as they do for ``LinWeizheDragon/PreFLMR_ViT-B``.

Example:
    >>> path = write_tiny_checkpoint("flmr-tiny")
    >>> FLMRModelForRetrieval.from_pretrained(path).config.dim
    16

On the command line: ``flmr tiny-checkpoint /tmp/flmr-tiny [--style preflmr]``.
"""

import os
from pathlib import Path
from typing import Literal

import torch

from flmr.data import BERT_VOCAB_FOLDER

from .configuration_flmr import FLMRConfig
from .errors import ModelInputError
from .modeling_flmr import FLMRModelForRetrieval
from .tokenization_flmr import FLMRContextEncoderTokenizer, FLMRQueryEncoderTokenizer

TinyStyle = Literal["flmr", "preflmr"]
TINY_STYLES: tuple[TinyStyle, ...] = ("flmr", "preflmr")

TINY_TEXT = {"hidden_size": 24, "intermediate_size": 48, "num_attention_heads": 4, "num_hidden_layers": 2}
TINY_VISION = {
    "hidden_size": 24,
    "intermediate_size": 48,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "image_size": 32,
    "patch_size": 8,
}
# PreFLMR's architecture: a transformer mapping network over the text encoder's states, instructions
# masked up to their ":".
_PREFLMR = {
    "use_transformer_mapping_network": True,
    "transformer_mapping_config_base": "bert-base-uncased",
    "transformer_mapping_num_hidden_layers": 1,
    "transformer_mapping_cross_attention_length": 8,
    "mask_instruction_token": ":",
}


def tiny_config(style: TinyStyle = "flmr") -> FLMRConfig:
    """The configuration of a tiny checkpoint: 16-dim vectors, 2-layer 24-wide text and vision encoders,
    32x32-pixel images, 4 image vectors; ``"preflmr"`` adds PreFLMR's 1-layer mapping network.

    Raises:
        ModelInputError: ``style`` is neither ``"flmr"`` nor ``"preflmr"``.
    """
    if style not in TINY_STYLES:
        raise ModelInputError(f"style must be one of {', '.join(TINY_STYLES)}, got {style!r}")
    extra = _PREFLMR if style == "preflmr" else {}
    return FLMRConfig(
        dim=16, mapping_network_prefix_length=4, text_config=TINY_TEXT, vision_config=TINY_VISION, **extra
    )


def tiny_model(style: TinyStyle = "flmr", seed: int = 0) -> FLMRModelForRetrieval:
    """A tiny randomly initialised model (seeded) with the bert-base-uncased tokenizers, in eval mode."""
    config = tiny_config(style)
    torch.manual_seed(seed)
    model = FLMRModelForRetrieval(
        config,
        query_tokenizer=FLMRQueryEncoderTokenizer.from_pretrained(BERT_VOCAB_FOLDER),
        context_tokenizer=FLMRContextEncoderTokenizer.from_pretrained(BERT_VOCAB_FOLDER),
    )
    return model.eval()


def write_tiny_checkpoint(output: str | os.PathLike, style: TinyStyle = "flmr", seed: int = 0) -> Path:
    """Save a tiny model (see [`tiny_model`]) as a checkpoint folder at ``output``; returns its path.

    The folder holds what a published checkpoint holds (``config.json``, ``model.safetensors``, both
    tokenizers) plus its image processor; about 3 MB, written in about a second.
    """
    path = Path(output)
    tiny_model(style, seed).save_pretrained(path)
    return path
