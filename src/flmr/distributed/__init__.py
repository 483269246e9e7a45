"""Scale-out on Ray: distributed encoding, index build from embedding shards, sharded search and serving.

Ray is an optional extra (``pip install "flmr[ray]"``): this package imports without it, and each entry
point raises an ``ImportError`` naming the extra when it is called without Ray. The single-machine path
(``flmr.retrieval.Retriever``, ``flmr index``) never needs it; sharded indexes (``flmr.index.ShardedIndex``)
and the merge of shard results (``flmr.search.sharded``) need no Ray either.

Example (the steps after the import start a Ray cluster, so the tests do not run them; see
``flmr.distributed.shard_index`` for a build without Ray):
    >>> from flmr.distributed import build_sharded_index, connect, encode_collection, RayShardedSearcher
    >>> connect("local", num_cpus=2)  # doctest: +SKIP
    >>> encode_collection("passages.jsonl", "emb", "my_checkpoint", workers=2)  # doctest: +SKIP
    >>> build_sharded_index("emb", "my_sharded_index", num_shards=2)  # doctest: +SKIP
    >>> RayShardedSearcher("my_sharded_index").search(query_embeddings, k=10)  # doctest: +SKIP
"""

from flmr._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        (
            "LOCAL",
            "connect",
            "require_ray",
        ),
        ".cluster",
    ),
    **dict.fromkeys(("EmbeddingParts",), ".embeddings"),
    **dict.fromkeys(("encode_collection",), ".ray_encoding"),
    **dict.fromkeys(
        (
            "build_application",
            "serve_sharded_index",
        ),
        ".serve",
    ),
    **dict.fromkeys(
        (
            "build_sharded_index",
            "shard_bounds",
        ),
        ".shard_index",
    ),
    **dict.fromkeys(
        (
            "RayShardedSearcher",
            "ShardSearchActor",
        ),
        ".sharded_search",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, extra="ray")

__all__ = [
    "LOCAL",
    "EmbeddingParts",
    "RayShardedSearcher",
    "ShardSearchActor",
    "build_application",
    "build_sharded_index",
    "connect",
    "encode_collection",
    "require_ray",
    "serve_sharded_index",
    "shard_bounds",
]
