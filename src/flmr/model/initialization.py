"""Build a new FLMR retriever whose text encoder starts from a pretrained text model.

This is how FLMR training starts from a BERT/ColBERT-style encoder; the linear maps (and the
vision parts, when enabled) start randomly initialised.
"""

import os
from typing import Any

import torch
from transformers import AutoConfig, AutoModel

from .configuration_flmr import FLMRConfig
from .errors import ModelInputError
from .modeling_flmr import FLMRModelForRetrieval
from .tokenization_flmr import FLMRContextEncoderTokenizer, FLMRQueryEncoderTokenizer


def retriever_from_text_encoder(
    text_encoder_path: str | os.PathLike, dim: int = 128, seed: int = 0, **config_fields: Any
) -> FLMRModelForRetrieval:
    """A text-only (unless ``use_vision_encoder=True``) FLMR model around a pretrained text encoder.

    Args:
        text_encoder_path: a transformers model folder (or hub name) with a WordPiece ``vocab.txt``.
        dim: size of the late-interaction vectors.
        seed: seed of the random initialisation of the new layers.
        config_fields: further [`FLMRConfig`] fields.

    Raises:
        ModelInputError: the text encoder's weights do not fit the FLMR text encoder (missing or
            unexpected keys).

    Example (a tiny random BERT saved with bert-base-uncased's vocabulary stands in for a real one):
        >>> import shutil
        >>> from transformers import BertConfig, BertModel
        >>> from flmr.data import BERT_VOCAB_FOLDER
        >>> bert = BertConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
        >>> BertModel(bert).save_pretrained("tiny_bert")
        >>> _ = shutil.copy(BERT_VOCAB_FOLDER / "vocab.txt", "tiny_bert")
        >>> model = retriever_from_text_encoder("tiny_bert", dim=16)
        >>> model.config.dim, model.config.text_config.hidden_size, model.config.use_vision_encoder
        (16, 24, False)
        >>> model.save_pretrained("my_flmr")

    With a published text encoder from the model hub (not run by the tests):
        >>> model = retriever_from_text_encoder("google-bert/bert-base-uncased", dim=128)  # doctest: +SKIP
    """
    path = str(text_encoder_path)
    backbone_config = AutoConfig.from_pretrained(path)
    text_config = (
        {k: v for k, v in backbone_config.to_dict().items() if k not in ("model_type", "architectures")}
        if backbone_config.model_type == "bert"
        else {"text_encoder_base_model": path, "text_encoder_config": backbone_config.to_dict()}
    )
    config = FLMRConfig(
        dim=dim,
        text_config=text_config,
        use_vision_encoder=config_fields.pop("use_vision_encoder", False),
        **config_fields,
    )
    torch.manual_seed(seed)
    model = FLMRModelForRetrieval(
        config,
        query_tokenizer=FLMRQueryEncoderTokenizer.from_pretrained(path),
        context_tokenizer=FLMRContextEncoderTokenizer.from_pretrained(path),
    )
    pretrained = AutoModel.from_pretrained(path)
    missing, unexpected = model.context_text_encoder.text_model.load_state_dict(
        pretrained.state_dict(), strict=False
    )
    if missing or unexpected:
        raise ModelInputError(
            f"{path} does not fit the text encoder: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()
