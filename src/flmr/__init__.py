"""flmr: Fine-grained Late-interaction Multi-modal Retrieval (FLMR / PreFLMR).

The model family (``FLMRConfig``, ``FLMRModelForRetrieval``, the tokenizers) comes from
``flmr.model``; indexing and search with the original package's function names and the modern
``Retriever`` come from ``flmr.retrieval``. Both are imported on first use: ``import flmr`` alone
imports neither torch nor transformers. Importing ``flmr.model`` (which using any of its names does)
registers the FLMR classes with transformers' ``AutoConfig``, ``AutoModel`` and ``AutoTokenizer``.
Every error flmr raises on purpose is an ``FLMRError`` (see ``flmr.errors`` for the tree).
"""

from flmr._lazy import lazy_exports

__version__ = "0.1.0"

_MODEL_NAMES = (
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
)
_RETRIEVAL_NAMES = (
    "Ranking",
    "Retriever",
    "create_searcher",
    "index_custom_collection",
    "search_custom_collection",
)

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(_MODEL_NAMES, ".model"),
        **dict.fromkeys(_RETRIEVAL_NAMES, ".retrieval"),
        "FLMRError": ".errors",
    },
)

__all__ = [*_MODEL_NAMES, *_RETRIEVAL_NAMES, "FLMRError"]
