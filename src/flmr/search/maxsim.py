"""MaxSim building blocks shared by the exact and PLAID searchers (plain torch, any device)."""

from __future__ import annotations

import torch


def as_query_batch(queries: torch.Tensor, dim: int) -> torch.Tensor:
    """Queries as a (num_queries, q_len, dim) float tensor; a single (q_len, dim) query becomes a batch of 1."""
    if queries.ndim == 2:
        queries = queries[None]
    if queries.ndim != 3 or queries.shape[-1] != dim:
        raise ValueError(
            f"queries must be (num_queries, q_len, {dim}) or (q_len, {dim}), got {tuple(queries.shape)}"
        )
    return queries.float()


def nonzero_rows(query: torch.Tensor) -> torch.Tensor:
    """The vectors of one (q_len, dim) query that are not all zero (FLMR zeroes masked positions)."""
    return query[query.abs().amax(dim=-1) > 0]


def segment_max(scores: torch.Tensor, owners: torch.Tensor, num_owners: int, floor: float) -> torch.Tensor:
    """Per-owner max of ``scores`` (n, m) rows grouped by ``owners`` (n,); owners with no row get ``floor``.

    Example:
        >>> segment_max(torch.tensor([[1.0], [3.0], [2.0]]), torch.tensor([0, 0, 2]), 3, floor=0.0)
        tensor([[3.],
                [0.],
                [2.]])
    """
    result = torch.full((num_owners, scores.shape[1]), floor, dtype=scores.dtype, device=scores.device)
    return result.scatter_reduce_(0, owners[:, None].expand(-1, scores.shape[1]), scores, "amax")
