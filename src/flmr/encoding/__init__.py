"""Collections -> token embeddings: reading collections, encoding documents and queries.

Names are imported on first use, so that the index layer reads [`EncoderIdentity`] (standard library
only) without loading the encoders, torch's models or transformers.
"""

from flmr._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("Document", "read_collection"), ".collection"),
    **dict.fromkeys(
        ("DocumentEncoder", "EmbeddingChunk", "encoder_identity", "model_fingerprint"), ".documents"
    ),
    **dict.fromkeys(("CollectionError", "EncodingError", "InstructionError"), ".errors"),
    **dict.fromkeys(("EncoderIdentity", "same_encoder"), ".identity"),
    **dict.fromkeys(
        ("DEFAULT_INSTRUCTIONS", "QueryEncoder", "build_query_text", "query_text"),
        ".queries",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "CollectionError",
    "Document",
    "DocumentEncoder",
    "EmbeddingChunk",
    "EncoderIdentity",
    "EncodingError",
    "InstructionError",
    "QueryEncoder",
    "build_query_text",
    "encoder_identity",
    "model_fingerprint",
    "query_text",
    "read_collection",
    "same_encoder",
]
