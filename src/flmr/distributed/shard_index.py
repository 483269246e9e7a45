"""Index build from embedding parts: one codec trained on a sample of all parts, shards compressed in parallel.

1. A sample of vectors is drawn uniformly across every part and one ``ResidualCodec`` (centroids and
   residual quantiser) is trained on it with ``flmr.index.train_codec``.
2. The collection is cut into ``num_shards`` runs of consecutive documents; each run is compressed with
   that codec into an ordinary index folder by its own Ray task (``IndexWriter(codec=...)``), in
   parallel across the cluster.
3. ``flmr.index.write_sharded_index`` publishes them with a ``shards.json`` naming the shard folders in
   pid order; ``flmr.index.ShardedIndex`` loads them as one index (``flmr.search.ShardedSearcher`` and
   ``flmr.distributed.RayShardedSearcher`` search it). With ``num_shards=1`` the output is a plain index
   folder instead.

Because the codec is shared, a document's compressed vectors are the same in its shard as in one index
built with that codec over the whole collection (see ``flmr.search.sharded`` for what that guarantees).
This module uses only the public API of ``flmr.index``.

Example (compresses the shards in Ray tasks, so the tests do not run it; ``build_sharded_index`` shows
the same build in this process):
    >>> from flmr.distributed import build_sharded_index
    >>> build_sharded_index("my_embeddings", "sharded", num_shards=4, nbits=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from flmr.encoding.identity import EncoderIdentity
from flmr.index import (
    KMEANS_ITERATIONS,
    Index,
    IndexWriter,
    ResidualCodec,
    codec_sample_size,
    default_num_partitions,
    train_codec,
    write_sharded_index,
)

from .cluster import connect
from .embeddings import EmbeddingParts
from .errors import DistributedError


def shard_bounds(num_documents: int, num_shards: int) -> list[int]:
    """Boundaries of ``num_shards`` runs of consecutive documents whose sizes differ by at most one.

    Example:
        >>> shard_bounds(10, 3)
        [0, 4, 7, 10]
    """
    if not 1 <= num_shards <= num_documents:
        raise DistributedError(
            f"num_shards must be between 1 and the {num_documents} documents, got {num_shards}"
        )
    sizes = [num_documents // num_shards + (i < num_documents % num_shards) for i in range(num_shards)]
    return [0, *np.cumsum(sizes).tolist()]


def train_shared_codec(
    parts: EmbeddingParts,
    nbits: int = 2,
    num_partitions: int | None = None,
    kmeans_sample_size: int | None = None,
    kmeans_iterations: int = KMEANS_ITERATIONS,
    seed: int = 0,
) -> ResidualCodec:
    """The codec of every shard, trained on vectors sampled across all parts (sized like ``IndexWriter``)."""
    partitions = num_partitions or default_num_partitions(parts.num_vectors)
    sample = parts.sample(codec_sample_size(parts.num_vectors, partitions, kmeans_sample_size), seed)
    return train_codec(sample, nbits, partitions, kmeans_iterations, seed)


def build_sharded_index(
    embeddings: str | os.PathLike | EmbeddingParts,
    output: str | os.PathLike,
    *,
    num_shards: int = 2,
    nbits: int = 2,
    num_partitions: int | None = None,
    kmeans_sample_size: int | None = None,
    kmeans_iterations: int = KMEANS_ITERATIONS,
    seed: int = 0,
    store_vectors: bool = True,
    overwrite: bool = False,
    use_ray: bool = True,
    cpus_per_task: float = 1,
    ray_address: str | None = None,
) -> Path:
    """Build ``num_shards`` shard indexes (or one index) at ``output`` from an embeddings folder.

    Args:
        embeddings: a complete embeddings folder (see ``encode_collection``).
        output: where the sharded index folder (or, for one shard, the index) goes; it appears
            complete or not at all.
        num_shards: shards of consecutive documents, of equal document counts.
        nbits, num_partitions, kmeans_sample_size, kmeans_iterations, seed: as in ``IndexWriter``,
            for the one shared codec.
        store_vectors: as in ``IndexWriter``: keep float16 vectors for exact re-ranking.
        overwrite: replace an index at ``output``.
        use_ray: compress the shards in parallel Ray tasks (each reads its documents from the shared
            embeddings folder); otherwise one after the other in this process.
        cpus_per_task: CPUs reserved by each compression task.
        ray_address: cluster to connect to when this process is not connected yet (None: in-process).

    Returns the path of the index.

    Example:
        >>> from flmr.index import Index, ShardedIndex
        >>> path = build_sharded_index("my_embeddings", "sharded", num_shards=2, use_ray=False)
        >>> sharded = ShardedIndex.load(path)  # 200 documents of 16-dim vectors
        >>> sharded.num_documents, sharded.offsets, sharded.dim
        (200, [0, 100], 16)
        >>> path = build_sharded_index("my_embeddings", "single", num_shards=1, use_ray=False)
        >>> Index.load(path).num_documents  # one shard is a plain index folder
        200
    """
    parts = embeddings if isinstance(embeddings, EmbeddingParts) else EmbeddingParts(embeddings)
    parts.check_complete()
    bounds = shard_bounds(parts.num_documents, num_shards)
    encoder = parts.encoder()
    codec = train_shared_codec(parts, nbits, num_partitions, kmeans_sample_size, kmeans_iterations, seed)
    source = str(parts.root)

    def write_shards(paths: list[Path]) -> None:
        jobs = [(source, str(path), bounds[i], bounds[i + 1]) for i, path in enumerate(paths)]
        settings = (nbits, seed, store_vectors, encoder)
        if use_ray:
            ray = connect(ray_address)
            task = ray.remote(num_cpus=cpus_per_task)(write_shard)
            codec_ref = ray.put(codec)
            ray.get([task.remote(*job, codec_ref, *settings) for job in jobs])
        else:
            for job in jobs:
                write_shard(*job, codec, *settings)

    return write_sharded_index(
        output,
        num_shards,
        write_shards,
        overwrite=overwrite,
        encoder=encoder.to_json(),
        nbits=nbits,
        stores_vectors=store_vectors,
    )


def write_shard(
    embeddings: str,
    folder: str,
    start: int,
    stop: int,
    codec: ResidualCodec,
    nbits: int,
    seed: int,
    store_vectors: bool,
    encoder: EncoderIdentity,
) -> int:
    """Compress documents ``start..stop-1`` of ``embeddings`` with ``codec`` into the index ``folder``.

    Runs in a Ray task or in-process; returns the number of documents written.
    """
    chunks = EmbeddingParts(embeddings).iter_chunks(start, stop)
    index: Index = IndexWriter(nbits=nbits, seed=seed, codec=codec, store_vectors=store_vectors).write(
        folder, chunks, encoder=encoder
    )
    return index.num_documents
