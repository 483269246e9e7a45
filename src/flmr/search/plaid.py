"""PLAID search over a compressed index: candidate generation, centroid interaction, exact re-ranking."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from flmr.index.index import Index
from flmr.runtime import sized_threads
from flmr.search.exact import score_documents
from flmr.search.filters import MetadataFilter, compile_filter
from flmr.search.maxsim import as_query_batch, nonzero_rows, segment_max
from flmr.search.results import SearchHit, make_hits

CandidateQueryVectors = Literal["all", "text_first_32"]
TEXT_QUERY_VECTORS = 32


class PlaidSearcher:
    """PLAID (ColBERTv2) search, vectorised in torch so it runs on CPU or CUDA.

    1. Candidates: for each candidate-generating query vector, the ``ncells`` best centroids; the
       candidates are the live documents in their inverted lists.
    2. Centroid interaction: each candidate is scored by MaxSim over the centroid scores of its vectors'
       centroids, first keeping only centroids whose best score reaches ``centroid_score_threshold``
       (a query vector no kept centroid covers adds 0) to keep the best ``ndocs``, then unpruned to keep
       the best ``ndocs // 4``.
    3. Re-ranking: those documents are decompressed and scored by exact MaxSim; the top ``k`` return.

    ``ndocs`` is raised to ``k`` and stage 2 keeps at least ``k`` documents, so for ``k <= ndocs // 4``
    the candidates do not depend on ``k`` and a k-query's top n equals a larger-k query's top n.
    All-zero query vectors (masked positions) are ignored. ``candidate_query_vectors="text_first_32"``
    generates candidates from the first 32 non-zero query vectors only, like the original engine;
    ``"all"`` uses every vector, which finds more of the exact top-k for text+image queries.

    With a metadata ``filter`` the documents it rejects are dropped before stage 2. When at most
    ``ndocs`` documents match, all of them are re-ranked (the exact filtered top-k); otherwise stage 1
    doubles ``ncells`` until ``max(ndocs // 4, k)`` matching candidates are found (at worst every cell),
    so ``k`` results come back whenever ``k`` documents match, however far they are from the query,
    and the k-independence above still holds.

    Example:
        >>> searcher = PlaidSearcher("my_index")  # doctest: +SKIP
        >>> hits = searcher.search(query_embeddings, k=10)  # doctest: +SKIP
        >>> hits[0][0].pid, hits[0][0].score  # doctest: +SKIP
    """

    def __init__(
        self,
        index: Index | str | Path,
        *,
        ncells: int = 2,
        centroid_score_threshold: float = 0.45,
        ndocs: int = 1024,
        candidate_query_vectors: CandidateQueryVectors = "all",
        normalize_decompressed: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        if candidate_query_vectors not in ("all", "text_first_32"):
            raise ValueError(
                f"candidate_query_vectors must be 'all' or 'text_first_32', got {candidate_query_vectors!r}"
            )
        if ncells < 1 or ndocs < 1:
            raise ValueError(f"ncells and ndocs must be positive, got ncells={ncells}, ndocs={ndocs}")
        self.index = index if isinstance(index, Index) else Index.load(index)
        self.ncells = ncells
        self.centroid_score_threshold = centroid_score_threshold
        self.ndocs = ndocs
        self.candidate_query_vectors = candidate_query_vectors
        self.normalize_decompressed = normalize_decompressed
        self.device = torch.device(device)
        self._generation = -1

    @sized_threads(lambda self, queries, k, **_: self.work_per_query(queries, k))
    def search(
        self,
        queries: torch.Tensor,
        k: int = 10,
        return_documents: bool = False,
        filter: Mapping[str, Any] | MetadataFilter | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits for each query of a (num_queries, q_len, dim) batch (or one (q_len, dim) query).

        ``filter`` (see ``flmr.search.filters``) keeps only documents whose stored metadata match.
        """
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        metadata_filter = compile_filter(filter)
        self._sync_with_index()
        allowed = None if metadata_filter is None else metadata_filter.mask(self.index)
        queries = as_query_batch(queries, self.index.dim).to(self.device)
        results = []
        for query in queries:
            pids, scores = self._search_one(nonzero_rows(query), k, allowed)
            results.append(make_hits(pids.cpu(), scores.cpu(), self.index, return_documents))
        return results

    def work_per_query(self, queries: torch.Tensor, k: int) -> float:
        """FLOP of one query's centroid scores and re-ranking, which size the CPU threads (flmr.runtime).

        Queries are searched one after another, so threads are sized to one query's work.
        """
        q_len, dim = queries.shape[-2], self.index.dim
        num_centroids = self.index.codec.centroids.shape[0]
        reranked_vectors = max(self.ndocs // 4, k) * float(self.index.doclens.float().mean())
        return 2.0 * q_len * dim * (num_centroids + reranked_vectors)

    def _sync_with_index(self) -> None:
        """Move the small per-index tensors to the device, again whenever the index was updated."""
        if self._generation == self.index.generation:
            return
        self._codec = self.index.codec.to(self.device)
        self._centroids_t = self._codec.centroids.T.contiguous()
        self._generation = self.index.generation

    def _search_one(
        self, query_rows: torch.Tensor, k: int, allowed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best ``k`` (pids, scores) of one query; ``allowed``: bool per pid, the documents a filter keeps."""
        empty = torch.empty(0, device=self.device)
        if query_rows.shape[0] == 0:
            return empty.long(), empty
        ndocs = max(self.ndocs, k)
        if allowed is not None:
            matching = allowed.nonzero().flatten()
            if matching.numel() <= ndocs:  # few enough to score them all: the exact filtered top-k
                return self._rerank(query_rows, matching.to(self.device), k)
        centroid_scores = query_rows @ self._centroids_t  # (query vectors, partitions)
        candidates = self._candidates(centroid_scores, allowed, max(ndocs // 4, k)).to(self.device)
        if candidates.numel() == 0:
            return empty.long(), empty
        scores_by_centroid = (
            centroid_scores.T.contiguous()
        )  # row c: scores of centroid c for each query vector
        survivors = candidates[
            self._top(self._pruned_scores(centroid_scores, scores_by_centroid, candidates), ndocs)
        ]

        positions, owners = self._vector_positions(survivors)
        centroid_ids = self.index.gather_centroid_ids(positions).to(self.device)
        unpruned = segment_max(
            scores_by_centroid.index_select(0, centroid_ids), owners, survivors.shape[0], float("-inf")
        ).sum(1)
        return self._rerank(query_rows, survivors[self._top(unpruned, max(ndocs // 4, k))], k)

    def _rerank(
        self, query_rows: torch.Tensor, finalists: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The best ``k`` of ``finalists`` by exact MaxSim (see ``score_documents``)."""
        exact = score_documents(self.index, query_rows, finalists, self.normalize_decompressed, self._codec)
        best = self._top(exact, k)
        return finalists[best], exact[best]

    def _pruned_scores(
        self, centroid_scores: torch.Tensor, scores_by_centroid: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """Centroid interaction over the kept centroids only, read from their inverted lists.

        A candidate has a vector in kept centroid c exactly when it is in c's inverted list, so scanning
        the lists of the few kept centroids replaces reading the centroid ids of every candidate vector.
        """
        kept = (centroid_scores.amax(dim=0) >= self.centroid_score_threshold).nonzero().flatten()
        list_pids, list_owner = self.index.inverted_lists(kept)
        list_pids, list_owner = list_pids.to(self.device), list_owner.to(self.device)
        rank = torch.searchsorted(candidates, list_pids).clamp(max=candidates.shape[0] - 1)
        is_candidate = (candidates.index_select(0, rank) == list_pids).nonzero().flatten()
        rows = scores_by_centroid.index_select(
            0, kept.index_select(0, list_owner.index_select(0, is_candidate))
        )
        return segment_max(rows, rank.index_select(0, is_candidate), candidates.shape[0], 0.0).sum(1)

    def _vector_positions(self, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions, owners = self.index.vector_positions(pids.cpu())
        return positions, owners.to(self.device)

    def _candidates(
        self, centroid_scores: torch.Tensor, allowed: torch.Tensor | None, wanted: int
    ) -> torch.Tensor:
        """Sorted live candidate pids; with a filter, only allowed ones, from ever more cells until
        there are ``wanted`` of them (the matching documents may all lie far from the query)."""
        generating = centroid_scores
        if self.candidate_query_vectors == "text_first_32":
            generating = centroid_scores[:TEXT_QUERY_VECTORS]
        num_partitions = centroid_scores.shape[1]
        ncells = min(self.ncells, num_partitions)
        while True:
            cells = generating.topk(ncells, dim=1).indices.flatten().unique()
            candidates = self.index.candidate_pids(cells)
            if allowed is None:
                return candidates
            candidates = candidates[allowed[candidates]]
            if candidates.numel() >= wanted or ncells == num_partitions:
                return candidates
            ncells = min(2 * ncells, num_partitions)

    @staticmethod
    def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
        """Indices of the ``count`` best scores, best first."""
        return scores.topk(min(count, scores.shape[0])).indices
