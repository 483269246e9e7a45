"""Several shard indexes searched as one: global pids, and an exact merge of per-shard top-k lists.

A sharded index (``flmr.index.ShardedIndex``, which owns the ``shards.json`` format, the pid layout and
document lookups) is N ordinary index folders that cover consecutive runs of the collection: global pid =
shard offset + local pid. Every shard is compressed with one shared codec, so a document's decompressed
vectors, and hence its MaxSim score, are the same in its shard as in a single index over the whole
collection. This module searches one: each shard's searcher, then an exact merge of their top-k lists.

What the merge guarantees:

- ``exact=True``: each shard returns its exact top-k, the global top-k is among them, so the merged
  result equals an ``ExactSearcher`` over a single index of the same documents (same pids, same order,
  same scores up to float rounding), except that tied scores are ordered by global pid here.
- PLAID: the shared centroids give every shard the same probed cells, so a shard's candidates are the
  single index's candidates that it holds, scored the same. But each shard keeps its own best ``ndocs``
  and then ``ndocs // 2``, so N shards re-rank up to N times as many documents as one index, chosen
  by pruning among each shard's documents only. The results equal the single index's whenever its
  candidate stages are not limiting (e.g. ``ndocs`` at least the collection size). Otherwise they may
  differ either way (a document one index prunes at the first stage can, in its shard, displace one
  that would have won); every returned score is still the document's exact score under the codec.

Example (``my_index`` and ``my_sharded_index`` hold the same vectors of the sample collection, in one
index and in 2 shards; exact search ranks them the same):
    >>> searcher = ShardedSearcher("my_sharded_index", exact=True)
    >>> hits = searcher.search(query_embeddings, k=10, return_documents=True)
    >>> single = ExactSearcher("my_index").search(query_embeddings, k=10, return_documents=True)
    >>> [[hit.document.id for hit in query_hits] for query_hits in hits] == [
    ...     [hit.document.id for hit in query_hits] for query_hits in single]
    True
    >>> hits[0][0].document.id == searcher.document(hits[0][0].pid).id
    True
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from flmr.index.index import Index
from flmr.index.sharded import (  # noqa: F401 - the on-disk format lives in flmr.index.sharded; re-exported
    SHARDS_FORMAT,
    SHARDS_FORMAT_VERSION,
    SHARDS_MANIFEST,
    ShardedIndex,
    ShardSource,
    is_sharded_index,
    load_shards,
    read_shards_manifest,
    shard_offsets,
    shard_paths,
    write_shards_manifest,
)
from flmr.search.base import Searcher, check_k
from flmr.search.exact import ExactSearcher
from flmr.search.filters import MetadataFilter, compile_filter
from flmr.search.plaid import PlaidSearcher
from flmr.search.results import SearchHit
from flmr.search.settings import SearchSettings, search_settings


def merge_hits(per_shard: Sequence[Sequence[SearchHit]], offsets: Sequence[int], k: int) -> list[SearchHit]:
    """The best ``k`` of the shards' hits for one query, with global pids and ranks 1..k.

    ``per_shard[i]`` holds shard ``i``'s hits (local pids, best first). Higher scores come first; equal
    scores are ordered by global pid, so the result does not depend on which shard answered first.

    Example:
        >>> a = [SearchHit(pid=1, score=0.9, rank=1), SearchHit(pid=0, score=0.5, rank=2)]
        >>> b = [SearchHit(pid=0, score=0.7, rank=1)]
        >>> [(h.pid, h.score, h.rank) for h in merge_hits([a, b], offsets=[0, 10], k=2)]
        [(1, 0.9, 1), (10, 0.7, 2)]
    """
    candidates = (
        (hit.score, offset + hit.pid, hit.document)
        for hits, offset in zip(per_shard, offsets, strict=True)
        for hit in hits
    )
    best = heapq.nsmallest(k, candidates, key=lambda item: (-item[0], item[1]))
    return [
        SearchHit(pid=pid, score=score, rank=rank, document=document)
        for rank, (score, pid, document) in enumerate(best, start=1)
    ]


def merge_batches(
    per_shard: Sequence[Sequence[Sequence[SearchHit]]], offsets: Sequence[int], k: int
) -> list[list[SearchHit]]:
    """``merge_hits`` for every query of a batch; ``per_shard[i][q]`` is shard ``i``'s hits for query ``q``."""
    num_queries = len(per_shard[0]) if per_shard else 0
    return [merge_hits([shard[q] for shard in per_shard], offsets, k) for q in range(num_queries)]


def shard_searcher(
    index: Index,
    settings: SearchSettings | None = None,
    device: str | torch.device = "cpu",
) -> ExactSearcher | PlaidSearcher:
    """The searcher of one shard: exact MaxSim or PLAID, as ``settings`` say (their hybrid part is
    applied around the merged results, not per shard)."""
    settings = replace(settings or SearchSettings(), hybrid=None)
    if settings.exact:
        return ExactSearcher(index, settings=settings, device=device)
    return PlaidSearcher(index, settings, device=device)


class ShardedSearcher(Searcher):
    """Search N shard indexes (one shared codec) as one index: fan out, then merge the top-k exactly.

    Args:
        shards: a sharded index folder (with ``shards.json``), a single index folder, a list of index
            folders or loaded ``Index`` objects in pid order, or a loaded ``ShardedIndex``.
        settings: how every shard is searched (exact or PLAID and its knobs).
        exact, options: the earlier keyword form of ``settings`` (``exact=True``, ``ndocs=4096``...).
        device: where the shard searchers run.

    See the module docstring for what is guaranteed to equal a single index's results. Shards are
    searched one after the other in this process; ``flmr.distributed.RayShardedSearcher`` searches them
    in parallel on a Ray cluster with the same merge.

    Example:
        >>> searcher = ShardedSearcher(["my_sharded_index/shard-00000", "my_sharded_index/shard-00001"],
        ...                            SearchSettings(exact=True))
        >>> searcher.offsets, searcher.num_documents  # shard 1's local pid p is global pid 100 + p
        ([0, 100], 200)
        >>> [hit.rank for hit in searcher.search(query_embeddings, k=3)[0]]
        [1, 2, 3]
    """

    def __init__(
        self,
        shards: ShardSource | ShardedIndex,
        settings: SearchSettings | None = None,
        *,
        exact: bool | None = None,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> None:
        self.settings = search_settings(settings, exact=exact, **options)
        self.index = ShardedIndex.load(shards)
        self.shards = self.index.shards
        self.searchers = [shard_searcher(shard, self.settings, device) for shard in self.shards]
        self.offsets = self.index.offsets

    @property
    def dim(self) -> int:
        return self.index.dim

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

        See ``Searcher.search``: every shard returns its own top ``k`` of the documents ``filter``
        keeps, so the merge holds ``min(k, n)`` hits.
        """
        check_k(k)
        metadata_filter = compile_filter(filter)
        per_shard = [
            searcher.search(queries, k, return_documents, metadata_filter) for searcher in self.searchers
        ]
        return merge_batches(per_shard, self.offsets, k)

    def locate(self, pid: int) -> tuple[int, int]:
        """(shard number, local pid) of global ``pid`` (``ShardedIndex.locate``)."""
        return self.index.locate(pid)
