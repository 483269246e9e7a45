"""Configurations of the FLMR / PreFLMR model family.

The defaults below are those of the original implementation: a published ``config.json`` stores
only the fields that differ from them, so any change here would silently change what a published
checkpoint means.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig
from transformers.models.clip.configuration_clip import CLIPVisionConfig

BERT_BASE_NAMES = ("bert-base-uncased", "google-bert/bert-base-uncased")


class FLMRTextConfig(PreTrainedConfig):
    r"""Configuration of the text encoder of FLMR (BERT fields with bert-base-uncased defaults).

    Args:
        projection_dim: kept for compatibility with the original configuration; unused.
        text_encoder_base_model: ``"bert-base-uncased"`` builds a BERT encoder from the fields of this
            configuration. Any other name or path is resolved with ``AutoConfig`` (a local folder
            works offline); ``text_encoder_config`` may instead hold that architecture's config dict
            so that no lookup is needed at all.
        text_encoder_config: the config dict (with ``model_type``) of a non-BERT text encoder.
        query_maxlen: the default query length of the query tokenizer.

    Example:
        >>> config = FLMRTextConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=4)
        >>> config.query_maxlen
        32
    """

    model_type = "flmr_text_model"
    base_config_key = "text_config"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    position_embedding_type: str = "absolute"
    use_cache: bool = True
    classifier_dropout: float | None = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    projection_dim: int = 0
    text_encoder_base_model: str = "bert-base-uncased"
    text_encoder_config: dict | None = None
    query_maxlen: int = 32

    @property
    def uses_bert(self) -> bool:
        """Whether the text encoder is the BERT built from this configuration's own fields."""
        return self.text_encoder_config is None and self.text_encoder_base_model in BERT_BASE_NAMES


class FLMRVisionConfig(CLIPVisionConfig):
    r"""Configuration of the vision encoder of FLMR: a CLIP vision transformer.

    The defaults are those of ``openai/clip-vit-base-patch32`` (hidden size 768, 12 layers, patch 32,
    ``quick_gelu``).

    Example:
        >>> FLMRVisionConfig().patch_size
        32
    """

    model_type = "flmr_vision_model"
    base_config_key = "vision_config"


class FLMRConfig(PreTrainedConfig):
    r"""Configuration of [`FLMRModelForRetrieval`]: FLMR and PreFLMR.

    Args:
        text_config: the text encoder configuration ([`FLMRTextConfig`] or its dict).
        vision_config: the vision encoder configuration ([`FLMRVisionConfig`] or its dict).
        dim: size of every late-interaction vector.
        mapping_network_prefix_length: vectors produced per image by the projection MLP.
        use_vision_encoder: whether the model has a vision encoder.
        mask_punctuation: mask punctuation tokens of documents.
        separate_query_and_context_text_encoder: separate (untied) query and context text encoders.
        separate_query_and_context_vision_encoder: separate query and context vision encoders.
        query_concat_output_from_vision_encoder: default for query(): append image vectors.
        query_concat_output_from_text_encoder: default for query(): include text vectors.
        context_concat_output_from_vision_encoder: default for doc(): prepend image vectors.
        context_concat_output_from_text_encoder: default for doc(): include text vectors.
        use_transformer_mapping_network: PreFLMR's cross-attention mapping network.
        transformer_mapping_config_base: name of the BERT configuration of the mapping network;
            ``"bert-base-uncased"`` (the published value) resolves offline to the text encoder's fields.
        transformer_mapping_num_hidden_layers: layers of the mapping network.
        load_cpu_extension: kept for compatibility; this implementation compiles nothing.
        mask_instruction_token: a token (PreFLMR: ``":"``) before whose first occurrence query
            tokens are masked.
        transformer_mapping_cross_attention_length: query text positions the mapping network attends to.
        vision_model_version: name of the image processor that matches the vision encoder.
        query_mask_input_ids_skip_list: token ids masked in queries.

    Example:
        >>> config = FLMRConfig(dim=16, text_config={"hidden_size": 24, "num_attention_heads": 4})
        >>> config.text_config.hidden_size, config.dim
        (24, 16)
    """

    model_type = "flmr"
    sub_configs_defaults = {"text_config": FLMRTextConfig, "vision_config": FLMRVisionConfig}

    text_config: dict | FLMRTextConfig | None = None
    vision_config: dict | FLMRVisionConfig | None = None
    dim: int = 128
    initializer_range: float = 0.02
    mapping_network_prefix_length: int = 32
    use_vision_encoder: bool = True
    mask_punctuation: bool = True
    separate_query_and_context_text_encoder: bool = False
    separate_query_and_context_vision_encoder: bool = False
    query_concat_output_from_vision_encoder: bool = True
    query_concat_output_from_text_encoder: bool = True
    context_concat_output_from_vision_encoder: bool = False
    context_concat_output_from_text_encoder: bool = True
    use_transformer_mapping_network: bool = False
    transformer_mapping_config_base: str | None = None
    transformer_mapping_num_hidden_layers: int | None = None
    load_cpu_extension: bool = False
    mask_instruction_token: str | None = None
    transformer_mapping_cross_attention_length: int = 32
    vision_model_version: str = "openai/clip-vit-base-patch32"
    query_mask_input_ids_skip_list: list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if self.query_mask_input_ids_skip_list is None:
            self.query_mask_input_ids_skip_list = []
        super().__post_init__(**kwargs)


__all__ = ["FLMRConfig", "FLMRTextConfig", "FLMRVisionConfig"]
