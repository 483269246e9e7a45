"""PLAID search over a compressed index: candidate generation, centroid interaction, exact re-ranking."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmr.index.index import Index
from flmr.runtime import scratch, sized_threads
from flmr.search.base import Searcher, check_k
from flmr.search.exact import ExactSearcher, score_pairs
from flmr.search.filters import MetadataFilter, compile_filter
from flmr.search.maxsim import as_query_batch, maxsim_totals, packed_queries, pair_chunks, segment_max
from flmr.search.results import SearchHit, make_hits
from flmr.search.settings import PlaidSettings, SearchSettings, search_settings

TEXT_QUERY_VECTORS = 32
# Exact search costs about one unit per (document vector, query vector) pair; the PLAID stages about
# EXACT_COST_RATIO units per centroid and per document vector they touch (see `exact_is_cheaper`).
# Measured one query()-shaped query at a time, one thread, against ExactSearcher on the same index
# (benchmarks/search_quality.py's collection; load ~1): text / text+image ms per query, PLAID vs exact,
# at 1,500 documents 31 / 72 vs 29 / 64, at 2,000 31 / 86 vs 38 / 94, at 3,000 33 / 93 vs 58 / 140, so
# the two cross near 1,700 documents (122k vectors), 0.58x the centroids and vectors the stages touch there.
EXACT_COST_RATIO = 0.6
# The pruned centroid interaction (scanning the inverted lists of the centroids above the threshold)
# runs only for queries with over PRUNED_STAGE_ABOVE * ndocs candidates; below that, scoring every
# candidate unpruned costs less and ranks as well. With unpruned scoring into reused buffers, 8 is
# where the two cross (one thread, 40 query()-shaped text / PreFLMR-shaped text+image queries, same
# recall either way): 25k documents, bound 2: 118 / 410 ms per query against 83 / 330 ms unpruned;
# 100k documents (ndocs 4,096 by budget_growth), bound 2: 365 / 1,552 ms, bound 8: 257 / 1,602 ms.
PRUNED_STAGE_ABOVE = 8
# Centroid interaction on CPU gathers at most this many centroid scores at a time, into one reused buffer
# (64 MB). A text+image query's candidates at 100k documents need 160M scores, 640 MB allocated afresh per
# query in one piece: that stage took 996 ms per query so, and 706 / 447 / 487-510 / 686 / 761 ms in
# chunks of 2**26 / 2**25 / 2**24 / 2**23 / 2**22 (30 PreFLMR-shaped queries, one thread, load ~1).
INTERACTION_CHUNK_SCORES = 1 << 24
# Queries whose stages run together, by default: on CPU one, since passes of 8 or 32 queries ran
# 2-3x slower per query (3,000 documents: their centroid-score gathers leave the caches) while the
# shared work (centroid scores, Python overhead) is small; on an accelerator a pass of many queries
# saves kernel launches.
CPU_QUERIES_PER_PASS = 1
ACCELERATOR_QUERIES_PER_PASS = 32
# collections up to this many live documents are searched with ncells and ndocs as set (see budget_growth)
GROWTH_FROM_DOCUMENTS = 25_000


class PlaidSearcher(Searcher):
    """PLAID (ColBERTv2) search, vectorised in torch over several queries at once (CPU or CUDA).

    1. Candidates: for each candidate-generating query vector, the ``ncells`` best centroids (fewer for
       a query of over 32 such vectors: ``cells_per_vector``); the candidates are the live documents
       in their inverted lists.
    2. Centroid interaction: each candidate is scored by MaxSim over the centroid scores of its vectors'
       centroids to keep the best ``ndocs // 2``. A query with over ``PRUNED_STAGE_ABOVE * ndocs``
       candidates first keeps its best ``ndocs`` by a pruned interaction over the centroids whose best
       score reaches ``centroid_score_threshold`` (a query vector no kept centroid covers adds 0). (Centroid scores rank documents poorly for [MASK]-expanded queries,
       whose twenty-odd near-identical expansion vectors multiply a centroid's error: on real FLMR
       queries the unpruned top 512 of 3,000 documents held 0.94 of the exact top 10, the top 1,024 0.97,
       which re-ranking then keeps whole.)
    3. Re-ranking: those documents are scored by exact MaxSim (over the stored float16 vectors, or the
       decompressed ones); the top ``k`` return.

    Past 25,000 live documents ``ncells`` and ``ndocs`` grow with the collection (``budget_growth``;
    ``grow_with_collection=False`` keeps them as set). ``ndocs`` is raised to ``k`` and every stage
    keeps at least ``k`` documents; stage 1 probes more
    cells (doubling ``ncells``, at worst every cell) until it has ``max(ndocs // 2, k)`` candidates, so
    ``min(k, live documents with vectors)`` hits come back, and for ``k <= ndocs // 2`` the candidates do
    not depend on ``k``: a k-query's top n equals a larger-k query's top n.
    All-zero query vectors (masked positions) are ignored. ``candidate_query_vectors="text_first_32"``
    generates candidates from the first 32 non-zero query vectors only, like the original engine;
    ``"all"`` uses every vector, which finds more of the exact top-k for text+image queries.

    With ``exact_when_cheaper`` (the default) a collection so small that exact MaxSim over all of it
    costs less than the PLAID stages is searched exactly (see ``exact_is_cheaper``): the results are
    then those of ``ExactSearcher``.

    With a metadata ``filter`` the documents it rejects are dropped before stage 2. When at most
    ``ndocs`` documents match, all of them are re-ranked (the exact filtered top-k); otherwise stage 1
    probes more cells until it has ``max(ndocs // 2, k)`` matching candidates.

    Example:
        >>> searcher = PlaidSearcher("my_index")
        >>> hits = searcher.search(query_embeddings, k=10)  # (2, 32, 16) query vectors
        >>> [len(query_hits) for query_hits in hits], [hit.rank for hit in hits[0][:3]]
        ([10, 10], [1, 2, 3])
        >>> only = {"$id": {"$in": ["vim", "xterm"]}}  # 2 documents match: both are re-ranked
        >>> sorted(searcher.document(hit.pid).id for hit in searcher.search(query_embeddings, k=10, filter=only)[0])
        ['vim', 'xterm']
    """

    def __init__(
        self,
        index: Index | str | Path,
        settings: SearchSettings | PlaidSettings | None = None,
        *,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> None:
        """``settings`` (or, as earlier versions took them, ``PlaidSettings``' fields and
        ``normalize_decompressed`` as keyword ``options``) steer the stages; ``settings.exact`` and
        ``settings.hybrid`` are ``build_searcher``'s business, not this searcher's.

        Raises:
            SearchSettingsError: an unknown option or a value out of range, or both forms at once.
        """
        self.settings = search_settings(settings, **options)
        plaid = self.settings.plaid
        self.index = index if isinstance(index, Index) else Index.load(index)
        self.ncells = plaid.ncells
        self.centroid_score_threshold = plaid.centroid_score_threshold
        self.ndocs = plaid.ndocs
        self.candidate_query_vectors = plaid.candidate_query_vectors
        self.normalize_decompressed = self.settings.normalize_decompressed
        self.exact_when_cheaper = plaid.exact_when_cheaper
        self.device = torch.device(device)
        on_cpu = self.device.type == "cpu"
        self.queries_per_pass = plaid.queries_per_pass or (
            CPU_QUERIES_PER_PASS if on_cpu else ACCELERATOR_QUERIES_PER_PASS
        )
        self._generation = -1

    @sized_threads(lambda self, queries, k, **_: self.work(queries, k))
    def search(
        self,
        queries: torch.Tensor,
        k: int = 10,
        return_documents: bool = False,
        filter: Mapping[str, Any] | MetadataFilter | None = None,
        *,
        query_texts: Sequence[str] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits for each query of a (num_queries, q_len, dim) batch (or one (q_len, dim) query).

        See ``Searcher.search`` for the arguments and guarantees (``query_texts`` are not read). The
        stages run for ``queries_per_pass`` queries at a time (default: 1 on CPU, 32 elsewhere).
        """
        check_k(k)
        metadata_filter = compile_filter(filter)
        self._sync_with_index()
        packed, counts = packed_queries(as_query_batch(queries, self.index.dim).to(self.device))
        if self.exact_when_cheaper and self.exact_is_cheaper(k):
            hits = ExactSearcher(self.index, settings=self.settings, device=self.device).search(
                packed, k, return_documents, metadata_filter
            )
        else:
            allowed = None if metadata_filter is None else metadata_filter.mask(self.index)
            passes = [
                slice(first, first + self.queries_per_pass)
                for first in range(0, packed.shape[0], self.queries_per_pass)
            ]
            hits = []
            for part, (qids, pids, scores) in zip(
                passes, self._run_passes(passes, packed, counts, k, allowed), strict=True
            ):
                bounds = np.searchsorted(qids.cpu().numpy(), np.arange(packed[part].shape[0] + 1))
                hits += [
                    make_hits(pids[start:end].cpu(), scores[start:end].cpu(), self.index, return_documents)
                    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
                ]
        return [query_hits if count else [] for query_hits, count in zip(hits, counts.tolist(), strict=True)]

    def exact_is_cheaper(self, k: int = 10) -> bool:
        """Whether exact MaxSim over every live vector costs less than the PLAID stages.

        Per query vector, exact search scores every live document vector; PLAID scores every centroid
        and then touches the vectors of the ``max(ndocs, k)`` documents of centroid interaction and of
        the ``max(ndocs // 2, k)`` re-ranked ones (each at most the live documents), each touch (gathers,
        reductions, products) costing about ``EXACT_COST_RATIO`` times a dot product in exact search.
        Exact search wins when ``live vectors <= EXACT_COST_RATIO * (num_partitions + touched documents *
        mean length)``: on the benchmark collection, up to about 1,700 documents.
        """
        index = self.index
        live_documents = index.num_documents - int(index.deleted.sum())
        mean_length = index.num_vectors / max(1, index.num_documents)
        live_vectors = live_documents * mean_length
        ndocs = max(self.ndocs, k)
        touched = min(ndocs, live_documents) + min(max(ndocs // 2, k), live_documents)
        return live_vectors <= EXACT_COST_RATIO * (index.num_partitions + touched * mean_length)

    def work(self, queries: torch.Tensor, k: int) -> float:
        """FLOP of the queries' centroid scores and re-ranking, which size the CPU threads (flmr.runtime)."""
        q_len, dim = queries.shape[-2], self.index.dim
        num_queries = queries.shape[0] if queries.dim() == 3 else 1
        num_centroids = self.index.codec.centroids.shape[0]
        reranked_vectors = max(self.ndocs // 2, k) * float(self.index.doclens.float().mean())
        return 2.0 * num_queries * q_len * dim * (num_centroids + reranked_vectors)

    def _run_passes(
        self,
        passes: list[slice],
        packed: torch.Tensor,
        counts: torch.Tensor,
        k: int,
        allowed: torch.Tensor | None,
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``_search_batch`` of each pass; on CPU, passes run side by side on the threads sized for them.

        A pass of one query is a chain of small, mostly memory-bound steps that gain little from a
        second thread, so a batch uses its threads one pass each (each torch op then single-threaded)
        rather than all of them for every pass.
        """
        threads = torch.get_num_threads()
        workers = min(len(passes), threads) if self.device.type == "cpu" else 1
        if workers <= 1:
            return [self._search_batch(packed[part], counts[part], k, allowed) for part in passes]
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="flmr-plaid") as pool:
                return list(
                    pool.map(lambda part: self._search_batch(packed[part], counts[part], k, allowed), passes)
                )
        finally:
            torch.set_num_threads(threads)

    def budget_growth(self) -> float:
        """``g = sqrt(live documents / 25,000)``, at least 1 (1 without ``grow_with_collection``): the
        search uses ``ncells * g`` cells and ``ndocs * g**1.5`` documents (100k documents: 2x, 2.8x).

        As a collection grows the exact top 10 spreads over more cells and ranks lower by centroid
        interaction: at 100k Debian documents (131,072 centroids, 100 ``query()``-shaped text
        queries) the candidates of 32 cells held 0.978 of it (16 cells: 0.944) and the best 2,048 /
        3,072 / 4,096 of 64 cells' candidates by centroid interaction 0.955 / 0.969 / 0.973 (the best
        1,024 of 16 cells' 0.914). The defaults hold 0.955-0.959 up to 25k documents, hence the
        growth from there.
        """
        if not self.settings.plaid.grow_with_collection:
            return 1.0
        live_documents = self.index.num_documents - int(self.index.deleted.sum())
        return max(1.0, math.sqrt(live_documents / GROWTH_FROM_DOCUMENTS))

    def _sync_with_index(self) -> None:
        """Move the small per-index tensors to the device and size ``ncells`` / ``ndocs`` to the
        collection, again whenever the index was updated."""
        if self._generation == self.index.generation:
            return
        self._codec = self.index.codec.to(self.device)
        self._centroids_t = self._codec.centroids.T.contiguous()
        growth = self.budget_growth()
        self.ncells = round(self.settings.plaid.ncells * growth)
        self.ndocs = round(self.settings.plaid.ndocs * growth**1.5)
        self._generation = self.index.generation

    def _search_batch(
        self, packed: torch.Tensor, counts: torch.Tensor, k: int, allowed: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(query ids, pids, scores) of the best ``k`` documents of every query, grouped by query, best first.

        ``packed``: (num_queries, rows, dim) from ``packed_queries``; ``allowed``: bool per pid.
        """
        ndocs = max(self.ndocs, k)
        finalists = max(ndocs // 2, k)
        num_queries = packed.shape[0]
        centroid_scores = packed @ self._centroids_t  # (queries, rows, partitions); padding rows score 0
        # row r, column q * partitions + c: query q's vector r against centroid c
        by_column = centroid_scores.transpose(0, 1).reshape(packed.shape[1], -1)
        rows_valid = torch.arange(packed.shape[1], device=self.device)[None] < counts[:, None]
        if allowed is not None:  # queries whose filter leaves few documents: re-rank all of them
            matching = allowed.nonzero().flatten()
            if matching.numel() <= ndocs:
                qids = torch.arange(num_queries).repeat_interleave(matching.numel())
                return self._rerank(packed, qids, matching.repeat(num_queries), k)
        qids, pids = self._candidates(centroid_scores, rows_valid, allowed, finalists)
        if qids.numel() == 0:
            return qids, pids, torch.empty(0, device=self.device)
        if torch.bincount(qids).max() > PRUNED_STAGE_ABOVE * ndocs:
            pruned = self._pruned_scores(centroid_scores, by_column, qids, pids)
            qids, pids = self._top_per_query(qids, pids, pruned, ndocs)
        unpruned = self._centroid_interaction(by_column, qids, pids)
        qids, pids = self._top_per_query(qids, pids, unpruned, finalists)
        return self._rerank(packed, qids, pids, k)

    def _rerank(
        self, packed: torch.Tensor, qids: torch.Tensor, pids: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The best ``k`` of each query's (qids, pids) pairs by exact MaxSim (see ``score_pairs``)."""
        exact = score_pairs(self.index, packed, qids, pids, self.normalize_decompressed, self._codec)
        live = torch.isfinite(exact)  # documents without vectors are never returned
        qids, pids, exact = qids[live], pids[live], exact[live]
        order = self._rank_per_query(qids, exact, k)
        return qids[order], pids[order], exact[order]

    def _candidates(
        self,
        centroid_scores: torch.Tensor,
        rows_valid: torch.Tensor,
        allowed: torch.Tensor | None,
        wanted: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Live (and allowed) candidates as (query ids, pids) pairs sorted by query then pid.

        Each generating vector probes ``cells_per_vector`` cells; a query with fewer than ``wanted``
        candidates probes twice as many, until it has them or has probed every cell.
        """
        generating = rows_valid.clone()
        if self.candidate_query_vectors == "text_first_32":
            generating[:, TEXT_QUERY_VECTORS:] = False
        num_partitions = centroid_scores.shape[2]
        eligible = ~self.index.deleted if allowed is None else allowed & ~self.index.deleted
        wanted = min(wanted, int(eligible.sum()))  # a small collection has fewer: stop when all are found
        quota = self.cells_per_vector(generating.sum(dim=1).cpu(), num_partitions)
        pending = torch.arange(centroid_scores.shape[0])
        found_q, found_p = [], []
        while pending.numel():
            on_device, pending_quota = pending.to(self.device), quota[pending].to(self.device)
            most = int(pending_quota.max())
            cells = centroid_scores[on_device].topk(most, dim=2).indices  # (pending, rows, most)
            ranks = torch.arange(cells.shape[2], device=self.device)
            probed = generating[on_device][:, :, None] & (ranks[None, None] < pending_quota[:, None, None])
            cell_q = on_device[:, None, None].expand_as(cells)[probed]
            qids, pids = self._list_members(cell_q.cpu(), cells[probed].cpu())
            keep = eligible[pids]
            qids, pids = qids[keep], pids[keep]
            enough = torch.bincount(qids, minlength=centroid_scores.shape[0])[pending] >= wanted
            done = enough | (quota[pending] == num_partitions)
            finished = torch.isin(qids, pending[done])
            found_q.append(qids[finished])
            found_p.append(pids[finished])
            pending = pending[~done]
            quota[pending] = (2 * quota[pending]).clamp(max=num_partitions)
        qids, pids = torch.cat(found_q), torch.cat(found_p)
        order = torch.argsort(qids * self.index.num_documents + pids)
        return qids[order].to(self.device), pids[order].to(self.device)

    def cells_per_vector(self, generating: torch.Tensor, num_partitions: int) -> torch.Tensor:
        """Cells each candidate-generating vector probes, per query, from its count of such vectors (q,).

        ``ncells`` for up to 32 vectors (a text query); for more (text+image queries),
        ``ncells * sqrt(32 / vectors)`` rounded, at least 1, so a query's probes grow with the square
        root of its vector count, not linearly: its image vectors add documents the text vectors miss
        while their candidates stay within a few times a text query's (25k Debian documents,
        PreFLMR-shaped queries of 113 vectors, ``ncells=16``: 9 cells each, as this gives, kept 0.997 of
        the exact top 10 in 0.27 of exact search's time; 16 kept 1.000 in 0.32; 4 kept 0.978 in 0.19).

        Example:
            >>> PlaidSearcher("my_index").cells_per_vector(torch.tensor([20, 32, 113]), 4096)
            tensor([16, 16,  9])
        """
        scale = (TEXT_QUERY_VECTORS / generating.clamp_min(1).double()).sqrt().clamp(max=1.0)
        return (self.ncells * scale).round().long().clamp(1, num_partitions)

    def _list_members(self, qids: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unique (query, pid) pairs of the inverted lists of the (query, cell) pairs."""
        keys = torch.unique(qids * self.index.num_partitions + cells)
        list_qids, list_cells = keys // self.index.num_partitions, keys % self.index.num_partitions
        list_pids, owners = self.index.inverted_lists(list_cells)
        pair_keys = torch.unique(list_qids[owners] * self.index.num_documents + list_pids)
        return pair_keys // self.index.num_documents, pair_keys % self.index.num_documents

    def _pruned_scores(
        self, centroid_scores: torch.Tensor, by_column: torch.Tensor, qids: torch.Tensor, pids: torch.Tensor
    ) -> torch.Tensor:
        """Centroid interaction over each query's kept centroids only, read from their inverted lists.

        A candidate has a vector in kept centroid c exactly when it is in c's inverted list, so scanning
        the lists of the few kept centroids replaces reading the centroid ids of every candidate vector.
        """
        num_docs, num_partitions = self.index.num_documents, centroid_scores.shape[2]
        kept = (centroid_scores.amax(dim=1) >= self.centroid_score_threshold).nonzero()  # [query, c] pairs
        list_pids, list_owner = self.index.inverted_lists(kept[:, 1].cpu())
        list_pids, list_owner = list_pids.to(self.device), list_owner.to(self.device)
        candidate_keys = qids * num_docs + pids
        list_keys = kept[list_owner, 0] * num_docs + list_pids
        rank = torch.searchsorted(candidate_keys, list_keys).clamp(max=candidate_keys.shape[0] - 1)
        hit = (candidate_keys.index_select(0, rank) == list_keys).nonzero().flatten()
        hit = hit[torch.from_numpy(np.argsort(rank[hit].cpu().numpy(), kind="stable")).to(self.device)]
        owner = kept[list_owner.index_select(0, hit)]
        columns = self._columns(by_column, owner[:, 0] * num_partitions + owner[:, 1])
        return maxsim_totals(segment_max(columns, rank.index_select(0, hit), candidate_keys.shape[0], 0.0))

    def _centroid_interaction(
        self, by_column: torch.Tensor, qids: torch.Tensor, pids: torch.Tensor
    ) -> torch.Tensor:
        """MaxSim of each (query, document) pair over the centroid scores of all the document's vectors,
        read once per distinct centroid of the document (``Index.document_centroids``); on CPU in chunks
        of at most ``INTERACTION_CHUNK_SCORES`` gathered scores."""
        centroid_ids, owners = self.index.document_centroids(pids.cpu())
        lengths = torch.bincount(owners, minlength=pids.shape[0])
        numbers = qids.index_select(0, owners.to(self.device)) * self.index.num_partitions
        numbers += centroid_ids.to(self.device)
        owners = owners.to(self.device)
        if self.device.type == "cpu":
            chunks = pair_chunks(qids.cpu(), lengths, max(1, INTERACTION_CHUNK_SCORES // by_column.shape[0]))
        else:
            chunks = [(0, pids.shape[0], slice(0, owners.shape[0]))]
        maxima = []
        for first, end, span in chunks:
            columns = self._columns(by_column, numbers[span])
            maxima.append(segment_max(columns, owners[span] - first, end - first, float("-inf")))
        return maxsim_totals(torch.cat(maxima))

    def _columns(self, by_column: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """The (rows, n) columns ``numbers`` of ``by_column``, gathered into a reused buffer (see ``scratch``)."""
        out = scratch("centroid_columns", (by_column.shape[0], numbers.shape[0]), self.device)
        return torch.index_select(by_column, 1, numbers, out=out)

    def _top_per_query(
        self, qids: torch.Tensor, pids: torch.Tensor, scores: torch.Tensor, count: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's ``count`` best pairs, still sorted by query then pid."""
        keep = self._rank_per_query(qids, scores, count)
        keep = keep[torch.argsort(qids[keep] * self.index.num_documents + pids[keep])]
        return qids[keep], pids[keep]

    @staticmethod
    def _rank_per_query(qids: torch.Tensor, scores: torch.Tensor, count: int) -> torch.Tensor:
        """Positions of each query's ``count`` best scores, grouped by query, best first (ties: stable)."""
        by_score = torch.argsort(scores, descending=True, stable=True)
        order = by_score[torch.argsort(qids[by_score], stable=True)]
        sorted_qids = qids[order]
        group_start = torch.searchsorted(sorted_qids, sorted_qids, right=False)
        rank = torch.arange(order.shape[0], device=order.device) - group_start
        return order[rank < count]
