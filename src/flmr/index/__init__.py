"""Compressed late-interaction index (PLAID / ColBERTv2 style): writing, loading, updating; sharded indexes.

Example (``doc_embeddings``: one (n_tokens, dim) tensor per document of ``docs``):
    >>> from flmr.index import IndexWriter, Index
    >>> documents = [{"id": d.id, "text": d.text} for d in docs]
    >>> index = IndexWriter(nbits=2, show_progress=False).write("new_index", doc_embeddings, documents=documents)
    >>> Index.load("new_index").document(0).id
    'vim'
"""

from flmr.index.builder import IndexWriter, codec_sample_size, train_codec
from flmr.index.codec import SUPPORTED_NBITS, ResidualCodec
from flmr.index.errors import (
    DuplicateIdError,
    FLMRIndexError,
    IndexExistsError,
    IndexFormatError,
    IndexInputError,
    IndexLockedError,
)
from flmr.index.index import Index
from flmr.index.inputs import DocumentChunk, iter_chunks
from flmr.index.kmeans import KMEANS_ITERATIONS, CentroidAssigner, default_num_partitions, train_centroids
from flmr.index.sharded import (
    ShardedIndex,
    is_sharded_index,
    read_shards_manifest,
    write_sharded_index,
    write_shards_manifest,
)
from flmr.index.storage import StoredDocument, stored_fields
from flmr.index.verify import VerifyReport, verify_index

__all__ = [
    "KMEANS_ITERATIONS",
    "SUPPORTED_NBITS",
    "CentroidAssigner",
    "DocumentChunk",
    "DuplicateIdError",
    "FLMRIndexError",
    "Index",
    "IndexExistsError",
    "IndexFormatError",
    "IndexInputError",
    "IndexLockedError",
    "IndexWriter",
    "ResidualCodec",
    "ShardedIndex",
    "StoredDocument",
    "VerifyReport",
    "codec_sample_size",
    "default_num_partitions",
    "is_sharded_index",
    "iter_chunks",
    "read_shards_manifest",
    "stored_fields",
    "train_centroids",
    "train_codec",
    "verify_index",
    "write_sharded_index",
    "write_shards_manifest",
]
