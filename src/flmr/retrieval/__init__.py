"""End-to-end retrieval: the modern `Retriever` and the original package's functions."""

from .original_api import (
    Ranking,
    create_searcher,
    index_custom_collection,
    index_path,
    search_custom_collection,
)
from .retriever import EncoderMismatchError, Retriever

__all__ = [
    "EncoderMismatchError",
    "Ranking",
    "Retriever",
    "create_searcher",
    "index_custom_collection",
    "index_path",
    "search_custom_collection",
]
