import numpy as np
import pytest
import torch

from flmr.index import ResidualCodec

# mean squared reconstruction error relative to the mean squared residual, measured ~0.36, 0.13, 0.019,
# 0.0005 on random unit vectors in 16-d with 64 centroids
RELATIVE_ERROR_BOUND = {1: 0.45, 2: 0.2, 4: 0.03, 8: 0.002}


def unit_vectors(count: int, dim: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(
        torch.randn(count, dim, generator=torch.Generator().manual_seed(seed)), dim=-1
    )


def fitted_codec(nbits: int, dim: int = 16) -> tuple[ResidualCodec, torch.Tensor, torch.Tensor]:
    vectors, centroids = unit_vectors(6000, dim, 0), unit_vectors(64, dim, 1)
    centroid_ids = (vectors @ centroids.T).argmax(dim=1)
    heldout = slice(0, 2000)
    codec = ResidualCodec.fit(centroids, vectors[heldout] - centroids[centroid_ids[heldout]], nbits)
    return codec, vectors[2000:], centroid_ids[2000:]


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_round_trip_error_is_bounded_per_nbits(nbits: int) -> None:
    codec, vectors, centroid_ids = fitted_codec(nbits)
    restored = codec.decompress(codec.compress(vectors, centroid_ids), centroid_ids, normalize=False)
    residuals = vectors - codec.centroids[centroid_ids]
    relative_error = ((restored - vectors) ** 2).sum(1).mean() / (residuals**2).sum(1).mean()
    assert relative_error < RELATIVE_ERROR_BOUND[nbits]


def test_more_bits_reconstruct_better() -> None:
    errors = []
    for nbits in (1, 2, 4, 8):
        codec, vectors, centroid_ids = fitted_codec(nbits)
        restored = codec.decompress(codec.compress(vectors, centroid_ids), centroid_ids)
        errors.append(float((restored - vectors).norm(dim=1).mean()))
    assert errors == sorted(errors, reverse=True)


@pytest.mark.parametrize("dim", [16, 10, 3])
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_packing_matches_per_dimension_bucket_lookup(nbits: int, dim: int) -> None:
    codec, vectors, centroid_ids = fitted_codec(nbits, dim)
    codes = codec.compress(vectors, centroid_ids)
    assert codes.dtype == torch.uint8
    assert codes.shape == (vectors.shape[0], -(-dim * nbits // 8))
    residuals = vectors - codec.centroids[centroid_ids]
    buckets = (residuals[:, :, None] >= codec.bucket_cutoffs[None]).sum(-1)  # reference quantiser
    expected = codec.centroids[centroid_ids] + codec.bucket_weights[torch.arange(dim), buckets]
    torch.testing.assert_close(codec.decompress(codes, centroid_ids, normalize=False), expected)


def test_normalized_decompression_gives_unit_vectors() -> None:
    codec, vectors, centroid_ids = fitted_codec(2)
    restored = codec.decompress(codec.compress(vectors, centroid_ids), centroid_ids, normalize=True)
    torch.testing.assert_close(restored.norm(dim=1), torch.ones(restored.shape[0]))


def test_quantiser_is_lloyd_max_optimal() -> None:
    codec, vectors, centroid_ids = fitted_codec(2)
    residuals = vectors - codec.centroids[centroid_ids]
    cutoffs, weights = codec.bucket_cutoffs, codec.bucket_weights
    torch.testing.assert_close(cutoffs, (weights[:, 1:] + weights[:, :-1]) / 2)
    buckets = (residuals[:, :, None] >= cutoffs[None]).sum(-1)
    for dim in range(0, 16, 5):  # on unseen residuals, each weight is close to its bucket's mean
        means = torch.stack([residuals[buckets[:, dim] == b, dim].mean() for b in range(4)])
        torch.testing.assert_close(means, weights[dim], atol=0.01, rtol=0)


def test_lloyd_max_reconstructs_better_than_quantiles() -> None:
    vectors, centroids = unit_vectors(6000, 16, 0), unit_vectors(64, 16, 1)
    centroid_ids = (vectors @ centroids.T).argmax(dim=1)
    residuals = vectors - centroids[centroid_ids]
    errors = []
    for iterations in (0, 20):
        codec = ResidualCodec.fit(centroids, residuals[:2000], 2, iterations=iterations)
        restored = codec.decompress(
            codec.compress(vectors[2000:], centroid_ids[2000:]), centroid_ids[2000:], False
        )
        errors.append(float(((restored - vectors[2000:]) ** 2).sum(1).mean()))
    assert errors[1] < 0.9 * errors[0]


@pytest.mark.parametrize("nbits", [0, 3, 16])
def test_unsupported_nbits_is_rejected(nbits: int) -> None:
    with pytest.raises(ValueError, match="nbits must be one of"):
        ResidualCodec.fit(unit_vectors(10, 4, 0), unit_vectors(10, 4, 1), nbits)


def test_centroids_are_stored_in_float16_and_a_reload_decompresses_the_same(tmp_path) -> None:
    codec, vectors, centroid_ids = fitted_codec(2)
    codes = codec.compress(vectors, centroid_ids)
    files = codec.save(tmp_path)
    assert np.load(tmp_path / files["centroids"]).dtype == np.float16  # as ColBERTv2 stores them
    reloaded = ResidualCodec.load(tmp_path, files, nbits=2)
    assert reloaded.centroids.dtype == torch.float32
    assert torch.equal(reloaded.centroids, codec.centroids)
    assert torch.equal(reloaded.decompress(codes, centroid_ids), codec.decompress(codes, centroid_ids))
