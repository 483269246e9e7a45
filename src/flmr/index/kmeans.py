"""Centroid training (spherical k-means with faiss) and nearest-centroid assignment (PyTorch).

Exhaustive k-means and assignment cost ``vectors x centroids x dim``: with ColBERT's partition heuristic
(2**15 centroids for 6M vectors) that is hours on a few CPU cores. So, past ``EXACT_CENTROID_LIMIT``
centroids, training is two-level (coarse k-means, then k-means inside each coarse cluster) and
assignment is coarse-to-fine: a vector only scores the centroids attached to its best coarse group.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch

EXACT_CENTROID_LIMIT = 4096
# ColBERTv2's default (``kmeans_niters=4``): on 3k and 10k Debian documents with query()-shaped queries,
# 4 iterations kept recall@10 against exact within 0.004 of 20 (0.973 vs 0.971 at 3k, 0.935 vs 0.939 at
# 10k) and cut the index build from 42.9 s to 14.8 s at 3k.
KMEANS_ITERATIONS = 4
_ASSIGN_BATCH = 1 << 16
_GROUPS_PER_CENTROID = 8


# Centroids per sqrt(num_vectors): ColBERT's heuristic uses 16; four times as many (64) makes centroid
# interaction rank documents far closer to exact MaxSim on [MASK]-expanded queries. Debian documents,
# query()-encoded queries, share of the exact top 10 among the best 256 documents by centroid
# interaction: 3k documents 0.897 (16) -> 0.960 (64); 10k 0.865 -> 0.919 (with ncells scaled 4x).
# Training is two-level past EXACT_CENTROID_LIMIT, so the build stays fast (10k documents: 26 s).
PARTITIONS_PER_SQRT_VECTOR = 64


def default_num_partitions(num_vectors: int) -> int:
    """The power of two at or below 64 * sqrt(num_vectors) (ColBERT's heuristic uses 16 * sqrt).

    Example:
        >>> default_num_partitions(6_000_000)
        131072
    """
    return 2 ** math.floor(math.log2(PARTITIONS_PER_SQRT_VECTOR * math.sqrt(max(num_vectors, 1))))


def train_centroids(
    sample: torch.Tensor, num_partitions: int, iterations: int = KMEANS_ITERATIONS, seed: int = 0
) -> torch.Tensor:
    """Unit-norm centroids (num_partitions, dim) from spherical k-means on ``sample`` (n, dim).

    Example:
        >>> sample = torch.nn.functional.normalize(torch.randn(2000, 16), dim=-1)
        >>> train_centroids(sample, 32).shape
        torch.Size([32, 16])
    """
    if num_partitions > sample.shape[0]:
        raise ValueError(f"cannot train {num_partitions} centroids on {sample.shape[0]} sampled vectors")
    points = np.ascontiguousarray(sample.detach().float().cpu().numpy())
    if num_partitions <= EXACT_CENTROID_LIMIT:
        centroids = _kmeans(points, num_partitions, iterations, seed)
    else:
        centroids = _two_level_kmeans(points, num_partitions, iterations, seed)
    return torch.nn.functional.normalize(torch.from_numpy(centroids), dim=-1)


def _kmeans(points: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    if k == points.shape[0]:
        return points.copy()
    kmeans = faiss.Kmeans(
        points.shape[1],
        k,
        niter=iterations,
        spherical=True,
        seed=seed,
        min_points_per_centroid=1,  # small samples are expected, silence faiss' warning
        max_points_per_centroid=1 << 30,  # the caller already sampled
    )
    kmeans.train(points)
    return kmeans.centroids


def _two_level_kmeans(points: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    num_groups = 2 ** round(math.log2(math.sqrt(k)))
    coarse = _kmeans(points, num_groups, iterations, seed)
    groups = (torch.from_numpy(points) @ torch.from_numpy(coarse).T).argmax(dim=1).numpy()
    group_sizes = np.bincount(groups, minlength=num_groups)
    # split k across groups proportionally to their sizes (largest remainders), at most one per point
    shares = group_sizes * k / group_sizes.sum()
    counts = np.floor(shares).astype(np.int64)
    counts[np.argsort(counts - shares)[: k - counts.sum()]] += 1
    counts = np.minimum(counts, group_sizes)
    deficit = k - counts.sum()
    for group in np.argsort(counts - group_sizes):  # most spare points first
        extra = min(deficit, group_sizes[group] - counts[group])
        counts[group] += extra
        deficit -= extra
    return np.concatenate(
        [
            _kmeans(points[groups == group], int(count), iterations, seed + group)
            for group, count in enumerate(counts)
            if count > 0
        ]
    )


class CentroidAssigner:
    """Finds the nearest centroid (max inner product) of vectors; coarse-to-fine for many centroids.

    With more than ``exact_limit`` centroids, the centroids are grouped by k-means into about
    sqrt(8 * num_partitions) groups and each centroid is attached to its 8 best groups; a vector scores
    the groups, then only the centroids attached to its best group (32x fewer dot products at 2**15
    centroids, over 90% exact on clustered data). A miss picks a slightly farther centroid, which the
    residual codes absorb.

    Example:
        >>> centroids = torch.nn.functional.normalize(torch.randn(64, 16), dim=-1)
        >>> CentroidAssigner(centroids).assign(centroids[[5, 7]]).tolist()
        [5, 7]
    """

    def __init__(
        self, centroids: torch.Tensor, exact_limit: int = EXACT_CENTROID_LIMIT, seed: int = 0
    ) -> None:
        self.centroids = centroids.float()
        self.group_centroids: torch.Tensor | None = None
        if centroids.shape[0] > exact_limit:
            self._build_groups(seed)

    def assign(self, vectors: torch.Tensor) -> torch.Tensor:
        """Centroid id (int64) of each row of ``vectors`` (n, dim)."""
        vectors = vectors.float()
        exact = self.group_centroids is None
        # the exact path scores every centroid, the coarse path only one group's: batch sizes bound memory
        batch_size = _ASSIGN_BATCH if exact else 4 * _ASSIGN_BATCH
        batches = [vectors[start : start + batch_size] for start in range(0, vectors.shape[0], batch_size)]
        if not batches:
            return torch.empty(0, dtype=torch.long, device=vectors.device)
        assign_batch = self._assign_exact if exact else self._assign_coarse_to_fine
        return torch.cat([assign_batch(batch) for batch in batches])

    def _assign_exact(self, vectors: torch.Tensor) -> torch.Tensor:
        return (vectors @ self.centroids.T).argmax(dim=1)

    def _build_groups(self, seed: int) -> None:
        num_centroids = self.centroids.shape[0]
        # about sqrt(8 * num_centroids) groups balances scoring the groups against scoring members
        num_groups = 2 ** round(math.log2(math.sqrt(_GROUPS_PER_CENTROID * num_centroids)))
        group_centroids = torch.from_numpy(_kmeans(self.centroids.cpu().numpy(), num_groups, 10, seed))
        self.group_centroids = group_centroids.to(self.centroids.device)
        nearest_groups = (self.centroids @ self.group_centroids.T).topk(_GROUPS_PER_CENTROID, dim=1).indices
        member_groups = nearest_groups.flatten()
        members = torch.arange(num_centroids, device=self.centroids.device).repeat_interleave(
            _GROUPS_PER_CENTROID
        )
        order = member_groups.argsort(stable=True)
        counts = torch.bincount(member_groups, minlength=num_groups).tolist()
        self.group_members = list(members[order].split(counts))
        for group, group_members in enumerate(self.group_members):
            if group_members.numel() == 0:  # a group no centroid is close to: fall back to all centroids
                self.group_members[group] = torch.arange(num_centroids, device=self.centroids.device)
        # each group's member centroids, gathered once instead of for every batch
        self.group_member_centroids = [self.centroids[group_members] for group_members in self.group_members]

    def _assign_coarse_to_fine(self, vectors: torch.Tensor) -> torch.Tensor:
        best_group = (vectors @ self.group_centroids.T).argmax(dim=1)
        assignment = torch.empty(vectors.shape[0], dtype=torch.long, device=vectors.device)
        order = best_group.argsort()
        group_sizes = torch.bincount(best_group, minlength=self.group_centroids.shape[0]).tolist()
        for group, rows in enumerate(order.split(group_sizes)):
            if rows.numel():
                scores = vectors.index_select(0, rows) @ self.group_member_centroids[group].T
                assignment[rows] = self.group_members[group][scores.argmax(dim=1)]
        return assignment
