"""End-to-end retrieval: the modern `Retriever` and the original package's functions."""

from .retriever import EncoderMismatchError, Retriever
from .original_api import Ranking, create_searcher, index_custom_collection, index_path, search_custom_collection

__all__ = [
    "EncoderMismatchError",
    "Ranking",
    "Retriever",
    "create_searcher",
    "index_custom_collection",
    "index_path",
    "search_custom_collection",
]
