"""PLAID search over a compressed index: candidate generation, centroid interaction, exact re-ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from flmr.index.index import Index
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

    def search(
        self, queries: torch.Tensor, k: int = 10, return_documents: bool = False
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits for each query of a (num_queries, q_len, dim) batch (or one (q_len, dim) query)."""
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        self._sync_with_index()
        queries = as_query_batch(queries, self.index.dim).to(self.device)
        results = []
        for query in queries:
            pids, scores = self._search_one(nonzero_rows(query), k)
            results.append(make_hits(pids.cpu(), scores.cpu(), self.index, return_documents))
        return results

    def _sync_with_index(self) -> None:
        """Move the small per-index tensors to the device, again whenever the index was updated."""
        if self._generation == self.index.generation:
            return
        self._codec = self.index.codec.to(self.device)
        self._centroids_t = self._codec.centroids.T.contiguous()
        self._generation = self.index.generation

    def _search_one(self, query_rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        empty = torch.empty(0, device=self.device)
        if query_rows.shape[0] == 0:
            return empty.long(), empty
        centroid_scores = query_rows @ self._centroids_t  # (query vectors, partitions)
        candidates = self._candidates(centroid_scores).to(self.device)
        if candidates.numel() == 0:
            return empty.long(), empty
        ndocs = max(self.ndocs, k)
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
        finalists = survivors[self._top(unpruned, max(ndocs // 4, k))]

        positions, owners = self._vector_positions(finalists)
        codes = self.index.gather_codes(positions).to(self.device)
        centroid_ids = self.index.gather_centroid_ids(positions).to(self.device)
        vectors = self._codec.decompress(codes, centroid_ids, normalize=False)
        token_scores = vectors @ query_rows.T
        if self.normalize_decompressed:  # cheaper than normalising the vectors: scale their few scores
            token_scores /= vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
        exact = segment_max(token_scores, owners, finalists.shape[0], float("-inf")).sum(1)
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

    def _candidates(self, centroid_scores: torch.Tensor) -> torch.Tensor:
        generating = centroid_scores
        if self.candidate_query_vectors == "text_first_32":
            generating = centroid_scores[:TEXT_QUERY_VECTORS]
        ncells = min(self.ncells, centroid_scores.shape[1])
        cells = generating.topk(ncells, dim=1).indices.flatten().unique()
        return self.index.candidate_pids(cells)

    @staticmethod
    def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
        """Indices of the ``count`` best scores, best first."""
        return scores.topk(min(count, scores.shape[0])).indices
