"""Published config.json files store only non-default fields: the defaults must be the original's."""

import pytest

import flmr
from helpers import ORIGINAL_PREFLMR_TINY, needs_shared

SPEC_DEFAULTS = {
    "dim": 128,
    "mapping_network_prefix_length": 32,
    "use_vision_encoder": True,
    "mask_punctuation": True,
    "initializer_range": 0.02,
    "separate_query_and_context_text_encoder": False,
    "separate_query_and_context_vision_encoder": False,
    "query_concat_output_from_vision_encoder": True,
    "query_concat_output_from_text_encoder": True,
    "context_concat_output_from_vision_encoder": False,
    "context_concat_output_from_text_encoder": True,
    "use_transformer_mapping_network": False,
    "transformer_mapping_config_base": None,
    "transformer_mapping_num_hidden_layers": None,
    "load_cpu_extension": False,
    "mask_instruction_token": None,
    "transformer_mapping_cross_attention_length": 32,
    "vision_model_version": "openai/clip-vit-base-patch32",
    "query_mask_input_ids_skip_list": [],
}
BERT_BASE = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "projection_dim": 0,
    "text_encoder_base_model": "bert-base-uncased",
    "query_maxlen": 32,
}
CLIP_B32 = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
}


@pytest.mark.parametrize(("name", "value"), sorted(SPEC_DEFAULTS.items()))
def test_top_level_default(name, value):
    assert getattr(flmr.FLMRConfig(), name) == value


def test_text_and_vision_defaults_are_bert_base_and_clip_b32():
    config = flmr.FLMRConfig()
    assert config.text_config.model_type == "flmr_text_model"
    assert config.vision_config.model_type == "flmr_vision_model"
    assert {k: getattr(config.text_config, k) for k in BERT_BASE} == BERT_BASE
    assert {k: getattr(config.vision_config, k) for k in CLIP_B32} == CLIP_B32


@needs_shared  # a config the original saved
def test_a_published_style_config_fills_unspecified_fields_from_the_defaults():
    config = flmr.FLMRConfig.from_pretrained(ORIGINAL_PREFLMR_TINY)
    assert config.text_config.vocab_size == 30522 and config.text_config.max_position_embeddings == 512
    assert config.vision_config.hidden_act == "quick_gelu" and config.vision_config.num_channels == 3
