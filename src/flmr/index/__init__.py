"""Compressed late-interaction index (PLAID / ColBERTv2 style): writing, loading, updating.

Example:
    >>> from flmr.index import IndexWriter, Index
    >>> index = IndexWriter(nbits=2).write("my_index", doc_embeddings, documents=docs)  # doctest: +SKIP
    >>> Index.load("my_index").document(0).text  # doctest: +SKIP
"""

from flmr.index.builder import IndexWriter, train_codec
from flmr.index.codec import SUPPORTED_NBITS, ResidualCodec
from flmr.index.errors import DuplicateIdError, IndexExistsError, IndexFormatError, IndexLockedError
from flmr.index.index import Index
from flmr.index.inputs import DocumentChunk, iter_chunks
from flmr.index.kmeans import CentroidAssigner, default_num_partitions, train_centroids
from flmr.index.storage import StoredDocument, stored_fields
from flmr.index.verify import VerifyReport, verify_index

__all__ = [
    "SUPPORTED_NBITS",
    "CentroidAssigner",
    "DocumentChunk",
    "DuplicateIdError",
    "Index",
    "IndexExistsError",
    "IndexFormatError",
    "IndexLockedError",
    "IndexWriter",
    "ResidualCodec",
    "StoredDocument",
    "VerifyReport",
    "default_num_partitions",
    "iter_chunks",
    "stored_fields",
    "train_centroids",
    "train_codec",
    "verify_index",
]
