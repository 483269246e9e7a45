"""MaxSim building blocks shared by the exact and PLAID searchers (plain torch, any device).

The reductions here run as single-threaded NumPy kernels on CPU tensors: torch's ``scatter_reduce_``
and ``repeat_interleave`` split small jobs across threads that then wait on each other when another
process holds a core (75 ms instead of 1 ms per call on a busy 2-core machine), while one thread
finishes these memory-bound jobs in about a millisecond whatever the load. On other devices they use
the torch kernels.
"""

from __future__ import annotations

import numpy as np
import torch

from flmr.search.errors import SearchError

# On CPU, re-ranking converts (or decompresses), scores and reduces this many document vectors at a time,
# so that each step reads what the last one wrote from the CPU caches rather than from memory.
# Re-ranking the 1,024 finalists of 32-vector query()-shaped text queries over 10,000 Debian documents
# (one thread, load ~0.8) took 38.5 / 29.1 / 25.2 / 22.5 / 24.2 / 29.0 ms per query in chunks of
# 1,024 / 2,048 / 4,096 / 8,192 / 16,384 / 32,768 vectors, and 34 ms in one piece. (Centroid interaction,
# whose gathers and reductions stream, took 15 -> 21 ms in chunks this small: it has its own, larger
# bound, plaid.INTERACTION_CHUNK_SCORES.)
CPU_CHUNK_VECTORS = 8192


def as_query_batch(queries: torch.Tensor, dim: int) -> torch.Tensor:
    """Queries as a (num_queries, q_len, dim) float tensor; a single (q_len, dim) query becomes a batch of 1.

    Raises:
        SearchError: ``queries`` is neither (num_queries, q_len, dim) nor (q_len, dim).
    """
    if queries.ndim == 2:
        queries = queries[None]
    if queries.ndim != 3 or queries.shape[-1] != dim:
        raise SearchError(
            f"queries must be (num_queries, q_len, {dim}) or (q_len, {dim}), got {tuple(queries.shape)}"
        )
    return queries.float()


def nonzero_rows(query: torch.Tensor) -> torch.Tensor:
    """The vectors of one (q_len, dim) query that are not all zero (FLMR zeroes masked positions)."""
    return query[query.abs().amax(dim=-1) > 0]


def packed_queries(queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's non-zero vectors moved to the front: (num_queries, max_rows, dim) and rows per query.

    The zero rows left at the end score 0 against anything, so they add nothing to a MaxSim sum.
    """
    keep = queries.abs().amax(dim=-1) > 0
    counts = keep.sum(dim=1)
    packed = torch.zeros(
        queries.shape[0], int(counts.max()) if counts.numel() else 0, queries.shape[2], device=queries.device
    )
    slots = torch.arange(packed.shape[1], device=queries.device)
    packed[slots[None] < counts[:, None]] = queries[keep]
    return packed, counts


def repeat_counts(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``values[i]`` repeated ``counts[i]`` times, end to end (``repeat_interleave``)."""
    if values.device.type == "cpu":
        return torch.from_numpy(np.repeat(values.numpy(), counts.numpy()))
    return values.repeat_interleave(counts)


def segment_max(scores: torch.Tensor, owners: torch.Tensor, num_owners: int, floor: float) -> torch.Tensor:
    """Per-owner max over the columns of ``scores`` (m, n), grouped by ``owners`` (n,, non-decreasing).

    Returns (num_owners, m); an owner with no column gets ``floor``, and no maximum is below it. Scores
    come one column per document vector (query vectors x document vectors, as ``q @ d.T`` gives them)
    so that on CPU each group is one contiguous run of every row: NumPy's ``maximum.reduceat`` then
    reduces them in one pass on one thread (about as fast as ``scatter_reduce_`` on an idle core, and
    it never stalls on a busy one).

    Example:
        >>> segment_max(torch.tensor([[1.0, 3.0, 2.0]]), torch.tensor([0, 0, 2]), 3, floor=0.0)
        tensor([[3.],
                [0.],
                [2.]])
    """
    result = torch.full((num_owners, scores.shape[0]), floor, dtype=scores.dtype, device=scores.device)
    if scores.shape[1] == 0:
        return result
    if scores.device.type != "cpu":
        return result.scatter_reduce_(0, owners[:, None].expand(-1, scores.shape[0]), scores.T, "amax")
    owners_np = owners.numpy()
    starts = np.flatnonzero(np.r_[True, owners_np[1:] != owners_np[:-1]])
    maxima = torch.from_numpy(np.maximum.reduceat(scores.contiguous().numpy(), starts, axis=1))
    result[torch.from_numpy(owners_np[starts])] = maxima.T.clamp_min(floor)
    return result


def maxsim_totals(per_vector_max: torch.Tensor) -> torch.Tensor:
    """Sum over query vectors of (documents, query vectors) maxima, in float64 then back to float32.

    Summing in float64 makes a total independent of how many all-zero query rows pad it, so a query
    searched alone and in a batch gets the same score.
    """
    return per_vector_max.sum(dim=1, dtype=torch.float64).to(per_vector_max.dtype)


def pair_chunks(
    qids: torch.Tensor, lengths: torch.Tensor, budget: int | None
) -> list[tuple[int, int, slice]]:
    """(first, end, vectors) of ranges of consecutive pairs of one query, sorted by query: the pairs
    ``first..end-1``, whose documents start within the same ``budget`` of the query's vectors
    (``lengths`` per pair), and the slice of their vectors laid end to end; a range holds at most
    ``budget`` vectors plus one document's; one range per query when None.

    Example:
        >>> pair_chunks(torch.tensor([0, 0, 0, 1]), torch.tensor([3, 3, 3, 3]), budget=5)
        [(0, 2, slice(0, 6, None)), (2, 3, slice(6, 9, None)), (3, 4, slice(9, 12, None))]
    """
    query = qids.numpy()
    if query.size == 0:
        return []
    ends = np.cumsum(lengths.numpy())
    before = ends - lengths.numpy()
    within = before - before[np.searchsorted(query, query)]  # vectors of the query's earlier pairs
    bucket = within // budget if budget else np.zeros_like(within)
    starts = np.flatnonzero(np.r_[True, (query[1:] != query[:-1]) | (bucket[1:] != bucket[:-1])])
    stops = np.r_[starts[1:], query.size]
    return [
        (first, end, slice(int(before[first]), int(ends[end - 1])))
        for first, end in zip(starts.tolist(), stops.tolist(), strict=True)
    ]
