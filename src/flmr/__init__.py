"""flmr: Fine-grained Late-interaction Multi-modal Retrieval (FLMR / PreFLMR)."""

from .model import (
    FLMRConfig,
    FLMRContextEncoderOutput,
    FLMRContextEncoderTokenizer,
    FLMRContextEncoderTokenizerFast,
    FLMRModelForRetrieval,
    FLMRModelForRetrievalOutput,
    FLMRPreTrainedModel,
    FLMRQueryEncoderOutput,
    FLMRQueryEncoderTokenizer,
    FLMRQueryEncoderTokenizerFast,
    FLMRTextConfig,
    FLMRTextModel,
    FLMRVisionConfig,
    FLMRVisionModel,
)

__version__ = "0.1.0"

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
