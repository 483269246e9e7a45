"""Collections -> token embeddings: reading collections, encoding documents and queries."""

from .collection import Document, read_collection
from .documents import DocumentEncoder, EmbeddingChunk, model_fingerprint, same_encoder
from .errors import CollectionError, EncodingError, InstructionError
from .queries import DEFAULT_INSTRUCTIONS, QueryEncoder, build_query_text, query_text

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "CollectionError",
    "Document",
    "DocumentEncoder",
    "EmbeddingChunk",
    "EncodingError",
    "InstructionError",
    "QueryEncoder",
    "build_query_text",
    "model_fingerprint",
    "query_text",
    "read_collection",
    "same_encoder",
]
