"""The FLMR / PreFLMR model family: configurations, models and tokenizers.

Importing this package registers the classes with transformers' Auto classes, so that
``AutoConfig``, ``AutoModel`` and ``AutoTokenizer`` load FLMR checkpoint folders.
"""

from transformers import AutoConfig, AutoModel, AutoTokenizer

from .configuration_flmr import FLMRConfig, FLMRTextConfig, FLMRVisionConfig
from .modeling_flmr import (
    FLMRContextEncoderOutput,
    FLMRModelForRetrieval,
    FLMRModelForRetrievalOutput,
    FLMRPreTrainedModel,
    FLMRQueryEncoderOutput,
    FLMRTextModel,
    FLMRVisionModel,
)
from .tokenization_flmr import (
    FLMRContextEncoderTokenizer,
    FLMRContextEncoderTokenizerFast,
    FLMRQueryEncoderTokenizer,
    FLMRQueryEncoderTokenizerFast,
)


def _register_auto_classes() -> None:
    for config_class, model_class in (
        (FLMRConfig, FLMRModelForRetrieval),
        (FLMRTextConfig, FLMRTextModel),
        (FLMRVisionConfig, FLMRVisionModel),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
    # Saved tokenizer configs name these classes (the original's own names); `slow_tokenizer_class`
    # registers that name as an alias of ours.
    for config_class, tokenizer_class, stored_name in (
        (FLMRConfig, FLMRQueryEncoderTokenizer, "FLMRBertQueryEncoderTokenizer"),
        (FLMRTextConfig, FLMRContextEncoderTokenizer, "FLMRBertContextEncoderTokenizer"),
    ):
        stored_alias = type(
            stored_name, (tokenizer_class,), {"__doc__": f"Alias of {tokenizer_class.__name__}."}
        )
        AutoTokenizer.register(
            config_class,
            slow_tokenizer_class=stored_alias,
            fast_tokenizer_class=tokenizer_class,
            exist_ok=True,
        )


_register_auto_classes()

__all__ = [
    "FLMRConfig",
    "FLMRContextEncoderOutput",
    "FLMRContextEncoderTokenizer",
    "FLMRContextEncoderTokenizerFast",
    "FLMRModelForRetrieval",
    "FLMRModelForRetrievalOutput",
    "FLMRPreTrainedModel",
    "FLMRQueryEncoderOutput",
    "FLMRQueryEncoderTokenizer",
    "FLMRQueryEncoderTokenizerFast",
    "FLMRTextConfig",
    "FLMRTextModel",
    "FLMRVisionConfig",
    "FLMRVisionModel",
]
