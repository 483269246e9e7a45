"""Checkpoint key layouts of FLMR.

The original model registers every shared module under several names (``query_*`` and
``context_*`` encoders that are the same module, a text encoder reachable as ``bert_model`` and
``text_model``), so a checkpoint may hold each tensor under any subset of those aliases. This model
registers each module once (``context_*``, ``text_model``); the functions here translate between
its keys and any stored layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from .configuration_flmr import FLMRConfig

TEXT_BACKBONE_NAMES = ("text_model", "bert_model")
# Buffers that older transformers versions saved and that current modules recompute.
IGNORED_CHECKPOINT_KEYS = re.compile(r"(^|\.)position_ids$")
VISION_ENCODER_MARKER = "_vision_encoder.vision_model."
NESTED_VISION_MARKER = "_vision_encoder.vision_model.vision_model."


def _shared_prefixes(config: FLMRConfig) -> list[tuple[str, str]]:
    """(model prefix, alias prefix) pairs of the modules queries and documents share."""
    pairs = []
    if not config.separate_query_and_context_text_encoder:
        pairs += [
            ("context_text_encoder.", "query_text_encoder."),
            ("context_text_encoder_linear.", "query_text_encoder_linear."),
        ]
    if not config.separate_query_and_context_vision_encoder:
        pairs += [
            ("context_vision_encoder.", "query_vision_encoder."),
            ("context_vision_projection.", "query_vision_projection."),
        ]
    return pairs


def _swap_text_backbone_name(key: str) -> list[str]:
    for own, other in (TEXT_BACKBONE_NAMES, TEXT_BACKBONE_NAMES[::-1]):
        marker = f"_text_encoder.{own}."
        if marker in key:
            return [key.replace(marker, f"_text_encoder.{other}.", 1)]
    return []


def _nest_clip_vision(key: str) -> list[str]:
    # transformers 5 flattened CLIPVisionModel; checkpoints keep its inner `vision_model.` level.
    marker = VISION_ENCODER_MARKER
    if marker in key and NESTED_VISION_MARKER not in key:
        return [key.replace(marker, NESTED_VISION_MARKER, 1)]
    return []


def key_aliases(key: str, config: FLMRConfig) -> list[str]:
    """Every name under which a checkpoint may store the model tensor ``key`` (``key`` first)."""
    aliases = [key]
    for model_prefix, alias_prefix in _shared_prefixes(config):
        if key.startswith(model_prefix):
            aliases.append(alias_prefix + key[len(model_prefix) :])
    for rewrite in (_swap_text_backbone_name, _nest_clip_vision):
        aliases += [alias for name in aliases for alias in rewrite(name)]
    return list(dict.fromkeys(aliases))


def to_model_layout(
    checkpoint: Mapping[str, torch.Tensor], model_keys: Iterable[str], config: FLMRConfig
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map a checkpoint in any alias layout to the model's own keys.

    Returns ``(state_dict, missing_keys, unexpected_keys)``: model keys found under no alias, and
    checkpoint keys that are an alias of no model key.
    """
    state_dict, missing, used = {}, [], set()
    for key in model_keys:
        found = next((alias for alias in key_aliases(key, config) if alias in checkpoint), None)
        if found is None:
            missing.append(key)
            continue
        state_dict[key] = checkpoint[found]
        used.update(alias for alias in key_aliases(key, config) if alias in checkpoint)
    unexpected = [k for k in checkpoint if k not in used and not IGNORED_CHECKPOINT_KEYS.search(k)]
    return state_dict, missing, unexpected


def to_published_layout(
    state_dict: Mapping[str, torch.Tensor], config: FLMRConfig
) -> dict[str, torch.Tensor]:
    """Rename the model's keys to the layout of the published checkpoints.

    Shared modules are written once under their ``query_*`` name and text encoders under
    ``bert_model``, as in ``LinWeizheDragon/PreFLMR_ViT-*``, so the original implementation loads
    what this one saves.
    """
    published = {}
    for key, tensor in state_dict.items():
        name = key.replace("_text_encoder.text_model.", "_text_encoder.bert_model.", 1)
        name = (_nest_clip_vision(name) or [name])[0]
        for model_prefix, alias_prefix in _shared_prefixes(config):
            if name.startswith(model_prefix):
                name = alias_prefix + name[len(model_prefix) :]
                break
        published[name] = tensor
    return published
