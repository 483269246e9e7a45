"""Several shard indexes searched as one: global pids, and an exact merge of per-shard top-k lists.

A sharded index is a folder with ``shards.json`` naming N ordinary index folders that cover consecutive
runs of the collection: shard ``i`` holds global pids ``offset_i .. offset_i + num_documents_i - 1``, so
global pid = shard offset + local pid. Every shard is compressed with one shared codec (see
``flmr.distributed.shard_index``), so a document's decompressed vectors, and hence its MaxSim score, are
the same in its shard as in a single index over the whole collection.

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

Example:
    >>> searcher = ShardedSearcher("my_sharded_index", exact=True)  # doctest: +SKIP
    >>> hits = searcher.search(query_embeddings, k=10)[0]  # doctest: +SKIP
    >>> hits[0].pid, searcher.document(hits[0].pid).id  # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmr.index.errors import IndexFormatError
from flmr.index.index import Index
from flmr.index.storage import StoredDocument
from flmr.search.base import Searcher, check_k
from flmr.search.exact import ExactSearcher
from flmr.search.filters import MetadataFilter, compile_filter
from flmr.search.plaid import PlaidSearcher
from flmr.search.results import SearchHit
from flmr.search.settings import SearchSettings, search_settings

SHARDS_MANIFEST = "shards.json"
SHARDS_FORMAT = "flmr-sharded-index"
SHARDS_FORMAT_VERSION = 1


def write_shards_manifest(folder: str | Path, shard_folders: Sequence[str], **extra: Any) -> Path:
    """Write ``folder/shards.json`` naming the shard index folders (relative to ``folder``), in pid order.

    The shards must already be complete indexes; their document counts are recorded so that a reader
    can check nothing was swapped. ``extra`` (encoder, codec settings...) is stored alongside.

    Example:
        >>> write_shards_manifest("my_sharded_index", ["shard-00000", "shard-00001"])  # doctest: +SKIP
    """
    folder = Path(folder)
    shards = []
    first_pid = 0
    for name in shard_folders:
        index = Index.load(folder / name)
        shards.append({"folder": name, "first_pid": first_pid, "num_documents": index.num_documents})
        first_pid += index.num_documents
    manifest = {
        "format": SHARDS_FORMAT,
        "format_version": SHARDS_FORMAT_VERSION,
        "num_documents": first_pid,
        "shards": shards,
        **extra,
    }
    temporary = folder / f".{SHARDS_MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2))
    os.replace(temporary, folder / SHARDS_MANIFEST)
    return folder / SHARDS_MANIFEST


def is_sharded_index(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``shards.json`` (a sharded index) rather than one index."""
    return (Path(folder) / SHARDS_MANIFEST).is_file()


def read_shards_manifest(folder: str | Path) -> dict[str, Any]:
    """The parsed ``shards.json`` of a sharded index; ``IndexFormatError`` when it is missing or invalid."""
    path = Path(folder) / SHARDS_MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"{folder} is not a sharded index: it has no {SHARDS_MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise IndexFormatError(f"{path} is not valid JSON: {error}") from error
    if manifest.get("format") != SHARDS_FORMAT or manifest.get("format_version") != SHARDS_FORMAT_VERSION:
        raise IndexFormatError(f"{path} is not a {SHARDS_FORMAT} manifest of version {SHARDS_FORMAT_VERSION}")
    return manifest


def shard_paths(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The index folders of a sharded index folder, of a single index folder (one shard), or as listed."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not is_sharded_index(folder):
            return [folder]
        return [folder / entry["folder"] for entry in read_shards_manifest(folder)["shards"]]
    return [Path(path) for path in source]


def load_shards(source: str | Path | Sequence[str | Path | Index]) -> list[Index]:
    """Load every shard index; checks the counts ``shards.json`` recorded and that all share one codec."""
    if isinstance(source, (str, Path)):
        shards = [Index.load(path) for path in shard_paths(source)]
        if is_sharded_index(source):
            recorded = [entry["num_documents"] for entry in read_shards_manifest(source)["shards"]]
            actual = [shard.num_documents for shard in shards]
            if actual != recorded:
                raise IndexFormatError(
                    f"{source}: shard sizes {actual} disagree with {SHARDS_MANIFEST} {recorded} "
                    "(rewrite it with write_shards_manifest after changing a shard)"
                )
    else:
        shards = [shard if isinstance(shard, Index) else Index.load(shard) for shard in source]
    if not shards:
        raise ValueError("a sharded index needs at least one shard")
    first = shards[0]
    for number, shard in enumerate(shards[1:], start=1):
        if shard.dim != first.dim or not torch.equal(shard.codec.centroids, first.codec.centroids):
            raise IndexFormatError(
                f"shard {number} ({shard.path}) has another codec than shard 0 ({first.path}): "
                "shards must be compressed with one shared codec for their scores to be comparable"
            )
    return shards


def shard_offsets(num_documents: Sequence[int]) -> list[int]:
    """The first global pid of each shard.

    Example:
        >>> shard_offsets([3, 5, 2])
        [0, 3, 8]
    """
    return [0, *np.cumsum(num_documents)[:-1].tolist()] if num_documents else []


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
        shards: a sharded index folder (with ``shards.json``), a single index folder, or a list of index
            folders or loaded ``Index`` objects in pid order.
        settings: how every shard is searched (exact or PLAID and its knobs).
        exact, options: the earlier keyword form of ``settings`` (``exact=True``, ``ndocs=4096``...).
        device: where the shard searchers run.

    See the module docstring for what is guaranteed to equal a single index's results. Shards are
    searched one after the other in this process; ``flmr.distributed.RayShardedSearcher`` searches them
    in parallel on a Ray cluster with the same merge.

    Example:
        >>> searcher = ShardedSearcher(["shard-a", "shard-b"], SearchSettings(exact=True))  # doctest: +SKIP
        >>> [hit.pid for hit in searcher.search(query_embeddings, k=3)[0]]  # doctest: +SKIP
        [412, 7, 1033]
    """

    def __init__(
        self,
        shards: str | Path | Sequence[str | Path | Index],
        settings: SearchSettings | None = None,
        *,
        exact: bool | None = None,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> None:
        self.settings = search_settings(settings, exact=exact, **options)
        self.shards = load_shards(shards)
        self.searchers = [shard_searcher(shard, self.settings, device) for shard in self.shards]
        self.offsets = shard_offsets([shard.num_documents for shard in self.shards])
        self.index = None

    @property
    def num_documents(self) -> int:
        return sum(shard.num_documents for shard in self.shards)

    @property
    def dim(self) -> int:
        return self.shards[0].dim

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
        """(shard number, local pid) of global ``pid``."""
        if not 0 <= pid < self.num_documents:
            raise IndexError(f"pid {pid} out of range: the sharded index has {self.num_documents} documents")
        shard = int(np.searchsorted(self.offsets, pid, side="right")) - 1
        return shard, pid - self.offsets[shard]

    def document(self, pid: int) -> StoredDocument:
        """Stored fields of global ``pid``."""
        shard, local = self.locate(pid)
        return self.shards[shard].document(local)
