import torch

from flmr.index import CentroidAssigner, default_num_partitions, train_centroids
from flmr.index import kmeans as kmeans_module


def clustered(
    count: int, dim: int = 32, clusters: int = 300, noise: float = 0.3, seed: int = 0
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(clusters, dim, generator=generator), dim=-1)
    picks = torch.randint(0, clusters, (count,), generator=generator)
    return torch.nn.functional.normalize(
        centers[picks] + noise * torch.randn(count, dim, generator=generator) / dim**0.5, dim=-1
    )


def test_default_num_partitions_is_four_times_colbert_heuristic() -> None:
    assert default_num_partitions(6_000_000) == 2**17  # 64 * sqrt(6e6) = 156767 (ColBERT: 2**15)
    assert default_num_partitions(10_000) == 4096  # 6400 (ColBERT: 1024)
    assert default_num_partitions(1) == 64


def test_trained_centroids_are_unit_norm_and_cover_the_data() -> None:
    sample = clustered(5000)
    centroids = train_centroids(sample, 64, iterations=10)
    assert centroids.shape == (64, 32)
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(64))
    random_centroids = torch.nn.functional.normalize(torch.randn(64, 32), dim=-1)
    fit = (sample @ centroids.T).amax(dim=1).mean()
    assert fit > (sample @ random_centroids.T).amax(dim=1).mean() + 0.2


def test_two_level_training_returns_requested_number_of_centroids(monkeypatch) -> None:
    monkeypatch.setattr(kmeans_module, "EXACT_CENTROID_LIMIT", 16)
    centroids = train_centroids(clustered(4000), 200, iterations=5)
    assert centroids.shape == (200, 32)
    assert torch.isfinite(centroids).all()


def test_exact_assignment_is_the_argmax() -> None:
    vectors, centroids = clustered(2000), clustered(50, seed=1)
    assert torch.equal(CentroidAssigner(centroids).assign(vectors), (vectors @ centroids.T).argmax(dim=1))


def test_coarse_to_fine_assignment_is_nearly_exact() -> None:
    vectors = clustered(20_000)
    centroids = train_centroids(vectors[:10_000], 1024, iterations=5)
    assigner = CentroidAssigner(centroids, exact_limit=64)
    assert assigner.group_centroids is not None
    approximate = assigner.assign(vectors[10_000:])
    exact = (vectors[10_000:] @ centroids.T).argmax(dim=1)
    assert (approximate == exact).float().mean() > 0.9
    # a miss still lands on a close centroid
    gap = (vectors[10_000:] * (centroids[exact] - centroids[approximate])).sum(1)
    assert gap.mean() < 0.01
