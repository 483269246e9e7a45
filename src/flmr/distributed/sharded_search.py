"""Sharded search on Ray: one actor per shard (and replica) holds the shard's searcher; the caller merges.

Example (starts a Ray cluster and its actors, so the tests do not run it; ``ShardSearchActor`` shows
what each actor does, in this process):
    >>> from flmr.distributed import RayShardedSearcher, connect
    >>> connect("local", num_cpus=2)  # doctest: +SKIP
    >>> searcher = RayShardedSearcher("my_sharded_index", exact=True)  # doctest: +SKIP
    >>> hits = searcher.search(query_embeddings, k=10)[0]  # doctest: +SKIP
    >>> searcher.close()  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from flmr.index import Index, ShardedIndex
from flmr.index.sharded import ShardSource
from flmr.search.base import Searcher, check_k
from flmr.search.filters import MetadataFilter, compile_filter
from flmr.search.results import SearchHit
from flmr.search.settings import SearchSettings, search_settings
from flmr.search.sharded import merge_batches, shard_searcher

from .cluster import connect
from .errors import DistributedError


class ShardSearchActor:
    """Holds one shard index (memory-mapped) and its searcher; runs as a Ray actor or Serve replica.

    Example:
        >>> actor = ShardSearchActor("my_sharded_index/shard-00000", SearchSettings(exact=True))
        >>> hits = actor.search(query_embeddings, k=5)  # the first shard holds 100 documents
        >>> [hit.rank for hit in hits[0]], all(hit.pid < 100 for query_hits in hits for hit in query_hits)
        ([1, 2, 3, 4, 5], True)
    """

    def __init__(
        self,
        path: str,
        settings: SearchSettings | None = None,
        device: str = "cpu",
    ) -> None:
        self.index = Index.load(path)
        self.searcher = shard_searcher(self.index, settings, device)

    def search(
        self,
        queries: torch.Tensor,
        k: int,
        return_documents: bool = False,
        filter_spec: Mapping[str, Any] | None = None,
    ) -> list[list[SearchHit]]:
        """The shard's top-``k`` hits (local pids) for each query of the batch, among the documents the
        filter (its JSON ``spec``, which travels between processes) keeps."""
        return self.searcher.search(queries, k, return_documents, filter_spec)


class RayShardedSearcher(Searcher):
    """Fan a query batch out to one Ray actor per shard, and merge their top-k like ``ShardedSearcher``.

    Args:
        shards: a sharded index folder, a single index folder, a list of index folders or a loaded
            ``ShardedIndex``, readable from every node (shared storage).
        settings: how every shard is searched (exact or PLAID and its knobs).
        exact, options: the earlier keyword form of ``settings``.
        replicas: actors per shard; successive searches take turns among them, for query load.
        cpus_per_actor, gpus_per_actor: resources reserved by each actor.
        device: where each actor searches ("cuda" with ``gpus_per_actor``).
        ray_address: cluster to connect to when this process is not connected yet (None: in-process).

    The results are those of ``flmr.search.ShardedSearcher`` over the same shards (the same merge;
    see ``flmr.search.sharded`` for how they compare with a single index).

    Example (needs a Ray cluster, so the tests do not run it):
        >>> searcher = RayShardedSearcher("my_sharded_index", replicas=2)  # doctest: +SKIP
        >>> [hit.pid for hit in searcher.search(query_embeddings, k=3)[0]]  # doctest: +SKIP
    """

    def __init__(
        self,
        shards: ShardSource | ShardedIndex,
        settings: SearchSettings | None = None,
        *,
        exact: bool | None = None,
        replicas: int = 1,
        cpus_per_actor: float = 0.5,
        gpus_per_actor: float = 0,
        device: str = "cpu",
        ray_address: str | None = None,
        **options: Any,
    ) -> None:
        self.settings = replace(search_settings(settings, exact=exact, **options), hybrid=None)
        if replicas < 1:
            raise DistributedError(f"replicas must be at least 1, got {replicas}")
        self._ray = connect(ray_address)
        # loaded here too (memory-mapped, cheap) for the pid offsets, the codec check and document lookups
        self.index = ShardedIndex.load(shards)
        self.shards = self.index.shards
        self.offsets = self.index.offsets
        actor_class = self._ray.remote(ShardSearchActor).options(
            num_cpus=cpus_per_actor, num_gpus=gpus_per_actor
        )
        self.actors = [
            [actor_class.remote(str(shard.path), self.settings, device) for _ in range(replicas)]
            for shard in self.shards
        ]
        self._turns = itertools.count()

    def search(
        self,
        queries: torch.Tensor,
        k: int = 10,
        return_documents: bool = False,
        filter: Mapping[str, Any] | MetadataFilter | None = None,
        *,
        query_texts: Sequence[str] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits (global pids) for each query of a (num_queries, q_len, dim) batch.

        See ``Searcher.search``; the filter's spec is sent to every shard actor.
        """
        check_k(k)
        metadata_filter = compile_filter(filter)
        spec = None if metadata_filter is None else metadata_filter.spec
        turn = next(self._turns)
        batch = self._ray.put(queries.detach().cpu())
        pending = [
            replicas[turn % len(replicas)].search.remote(batch, k, return_documents, spec)
            for replicas in self.actors
        ]
        return merge_batches(self._ray.get(pending), self.offsets, k)

    def close(self) -> None:
        """Stop the shard actors."""
        for actor in itertools.chain.from_iterable(self.actors):
            self._ray.kill(actor)
        self.actors = []
