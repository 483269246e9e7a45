"""Collections -> token embeddings: reading collections, encoding documents and queries."""

from .collection import Document, read_collection
from .documents import DocumentEncoder, EmbeddingChunk, model_fingerprint, same_encoder
from .errors import CollectionError
from .queries import QueryEncoder

__all__ = [
    "CollectionError",
    "Document",
    "DocumentEncoder",
    "EmbeddingChunk",
    "QueryEncoder",
    "model_fingerprint",
    "read_collection",
    "same_encoder",
]
