"""flmr: Fine-grained Late-interaction Multi-modal Retrieval (FLMR / PreFLMR).

The model family (``FLMRConfig``, ``FLMRModelForRetrieval``, the tokenizers) comes from
``flmr.model``; indexing and search with the original package's function names and the modern
``Retriever`` come from ``flmr.retrieval``.
"""

from . import model
from .model import *  # noqa: F403 - re-export the model family under the names of the original package
from .retrieval import Ranking, Retriever, create_searcher, index_custom_collection, search_custom_collection

__version__ = "0.1.0"

__all__ = [
    *model.__all__,
    "Ranking",
    "Retriever",
    "create_searcher",
    "index_custom_collection",
    "search_custom_collection",
]
