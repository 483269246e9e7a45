"""Residual compression of token vectors (ColBERTv2 style), in plain PyTorch.

A vector is stored as the id of its nearest centroid plus its residual (vector - centroid), each
residual dimension quantised to one of ``2**nbits`` buckets and the bucket codes bit-packed into bytes.
Bucket cutoffs and reconstruction weights are fitted per dimension (projected token embeddings are far
from isotropic) to held-out residuals: quantiles refined by Lloyd-Max iterations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flmr.index.storage import load_array, save_array
from flmr.runtime import scratch

SUPPORTED_NBITS = (1, 2, 4, 8)
_COMPRESS_BATCH = 1 << 16
_ARRAYS = ("centroids", "bucket_cutoffs", "bucket_weights")
LLOYD_ITERATIONS = 20


def check_nbits(nbits: int) -> None:
    """Raise ``ValueError`` unless ``nbits`` is one of 1, 2, 4, 8."""
    if nbits not in SUPPORTED_NBITS:
        raise ValueError(f"nbits must be one of {SUPPORTED_NBITS}, got {nbits!r}")


def _midpoints(weights: torch.Tensor) -> torch.Tensor:
    return (weights[:, 1:] + weights[:, :-1]) / 2


def _bucket_means(values: torch.Tensor, cutoffs: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Per dimension, the mean of the (sorted) values falling in each bucket; empty buckets keep theirs."""
    buckets = torch.searchsorted(cutoffs.contiguous(), values, right=True)
    sums = torch.zeros_like(previous).scatter_add_(1, buckets, values)
    counts = torch.zeros_like(previous).scatter_add_(1, buckets, torch.ones_like(values))
    return torch.where(counts > 0, sums / counts.clamp_min(1), previous).sort(dim=1).values


def stored_precision(centroids: torch.Tensor) -> torch.Tensor:
    """``centroids`` (n, dim) rounded to float16, the precision the index stores them in (as ColBERTv2
    does), as float32: a codec keeps them so in memory too, so that vectors compressed or assigned now
    decompress the same after a save and load."""
    return centroids.half().float().contiguous()


@dataclass(frozen=True)
class ResidualCodec:
    """Centroids plus per-dimension residual quantiser; compresses and decompresses token vectors.

    Example:
        >>> vectors = torch.nn.functional.normalize(torch.randn(1000, 16), dim=-1)
        >>> centroids = vectors[:8].clone()
        >>> ids = (vectors @ centroids.T).argmax(1)
        >>> codec = ResidualCodec.fit(centroids, vectors - centroids[ids], nbits=2)
        >>> codes = codec.compress(vectors, ids)
        >>> codes.shape, codes.dtype
        (torch.Size([1000, 4]), torch.uint8)
        >>> codec.decompress(codes, ids).shape
        torch.Size([1000, 16])
    """

    centroids: torch.Tensor  # (num_partitions, dim) float32 holding float16 values (stored as float16)
    bucket_cutoffs: torch.Tensor  # (dim, 2**nbits - 1) float32, increasing along dim 1
    bucket_weights: torch.Tensor  # (dim, 2**nbits) float32, reconstruction value of each bucket
    nbits: int
    _lookup: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_nbits(self.nbits)
        object.__setattr__(self, "centroids", stored_precision(self.centroids))
        object.__setattr__(self, "_lookup", self._byte_lookup_table())

    @classmethod
    def fit(
        cls, centroids: torch.Tensor, residuals: torch.Tensor, nbits: int, iterations: int = LLOYD_ITERATIONS
    ) -> ResidualCodec:
        """Fit the quantiser of each dimension to a held-out sample of residuals (n, dim).

        Starts from equal-population buckets (quantiles, ColBERTv2's quantiser) and refines them with
        ``iterations`` Lloyd-Max steps: each bucket reconstructs to the mean of its residuals and each
        cutoff sits halfway between neighbouring reconstruction values, which minimises the squared
        error (about a third less than quantiles at 2 bits on real token embeddings).
        """
        check_nbits(nbits)
        if residuals.shape[0] == 0:
            raise ValueError("cannot fit the residual codec on an empty residual sample")
        num_buckets = 1 << nbits
        values = residuals.float().T.contiguous().sort(dim=1).values  # (dim, n)
        quantiles = (torch.arange(num_buckets, dtype=torch.float64) + 0.5) / num_buckets
        rows = (quantiles * (values.shape[1] - 1)).round().long().to(values.device)
        weights = values[:, rows].contiguous()
        for _ in range(iterations):
            weights = _bucket_means(values, _midpoints(weights), weights)
        return cls(
            centroids=centroids.float().contiguous(),
            bucket_cutoffs=_midpoints(weights),
            bucket_weights=weights,
            nbits=nbits,
        )

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def num_partitions(self) -> int:
        return self.centroids.shape[0]

    @property
    def codes_per_byte(self) -> int:
        return 8 // self.nbits

    @property
    def bytes_per_vector(self) -> int:
        """Packed residual bytes per vector (the centroid id is stored separately)."""
        return -(-self.dim // self.codes_per_byte)

    def save(self, folder: Path) -> dict[str, str]:
        """Write the codec's arrays into ``folder``; returns the manifest's file entries for them."""
        files = {name: f"{name}.npy" for name in _ARRAYS}
        for name, file_name in files.items():
            array = getattr(self, name).cpu()
            save_array(folder / file_name, (array.half() if name == "centroids" else array).numpy())
        return files

    @classmethod
    def load(cls, folder: Path, files: dict[str, str], nbits: int) -> ResidualCodec:
        """Read a codec written by ``save`` (``files``: the manifest's file entries)."""
        arrays = {name: torch.from_numpy(np.array(load_array(folder / files[name]))) for name in _ARRAYS}
        return cls(**{name: array.float() for name, array in arrays.items()}, nbits=nbits)

    def to(self, device: torch.device | str) -> ResidualCodec:
        """A copy of this codec whose tensors live on ``device``."""
        return ResidualCodec(
            self.centroids.to(device),
            self.bucket_cutoffs.to(device),
            self.bucket_weights.to(device),
            self.nbits,
        )

    def compress(self, vectors: torch.Tensor, centroid_ids: torch.Tensor) -> torch.Tensor:
        """Bit-packed residual codes (n, bytes_per_vector) uint8 of ``vectors`` w.r.t. their centroids."""
        packed = [
            self._compress_batch(
                vectors[start : start + _COMPRESS_BATCH], centroid_ids[start : start + _COMPRESS_BATCH]
            )
            for start in range(0, vectors.shape[0], _COMPRESS_BATCH)
        ]
        if not packed:
            return torch.empty(0, self.bytes_per_vector, dtype=torch.uint8, device=vectors.device)
        return torch.cat(packed)

    def decompress(
        self,
        codes: torch.Tensor,
        centroid_ids: torch.Tensor,
        normalize: bool = True,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstructed float32 vectors (n, dim); ``normalize`` re-projects them onto the unit sphere.

        ``out``: an (n, dim) float32 tensor to write them into (without ``normalize``), e.g. a reused
        ``flmr.runtime.scratch`` buffer; the intermediate arrays always live in such buffers.
        """
        count, width = codes.shape
        rows = scratch("decompress_rows", (count, width), codes.device, torch.long)
        rows.copy_(codes).add_(torch.arange(width, device=codes.device) * 256)  # lookup row of each byte
        residuals = scratch("decompress_residuals", (count * width, self.codes_per_byte), codes.device)
        if self.codes_per_byte == 1:  # nbits=8: rows of one value select 10x faster from a flat table
            torch.index_select(self._lookup.view(-1), 0, rows.view(-1), out=residuals.view(-1))
        else:
            torch.index_select(self._lookup, 0, rows.view(-1), out=residuals)
        vectors = torch.index_select(self.centroids, 0, centroid_ids.long(), out=out)
        vectors += residuals.view(count, -1)[:, : self.dim]
        return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors

    def _compress_batch(self, vectors: torch.Tensor, centroid_ids: torch.Tensor) -> torch.Tensor:
        residuals = vectors.float() - self.centroids.index_select(0, centroid_ids.long())
        codes = self._bucketize(residuals)
        padding = self.bytes_per_vector * self.codes_per_byte - self.dim
        codes = torch.nn.functional.pad(codes, (0, padding))
        codes = codes.view(-1, self.bytes_per_vector, self.codes_per_byte)
        packed = codes[..., 0]
        for position in range(1, self.codes_per_byte):  # the first code of a byte ends in its highest bits
            packed = (packed << self.nbits) | codes[..., position]
        return packed

    def _bucketize(self, residuals: torch.Tensor) -> torch.Tensor:
        """Bucket index (uint8) of every residual value, with the cutoffs of its dimension."""
        # up to 15 cutoffs, comparing against each is several times faster than searchsorted
        if self.nbits <= 4:
            codes = torch.zeros(residuals.shape, dtype=torch.uint8, device=residuals.device)
            for cutoff in self.bucket_cutoffs.T:
                codes += residuals >= cutoff
            return codes
        # searchsorted works row by row: one row of cutoffs per dimension
        return torch.searchsorted(self.bucket_cutoffs, residuals.T.contiguous(), right=True).T.to(torch.uint8)

    def _shifts(self, device: torch.device) -> torch.Tensor:
        # the first code of a byte sits in its highest bits
        return torch.arange(self.codes_per_byte - 1, -1, -1, device=device) * self.nbits

    def _byte_lookup_table(self) -> torch.Tensor:
        """(bytes_per_vector * 256, codes_per_byte): residual values encoded by each byte at each position."""
        device = self.bucket_weights.device
        padded_dim = self.bytes_per_vector * self.codes_per_byte
        weights = torch.zeros(padded_dim, 1 << self.nbits, device=device)
        weights[: self.dim] = self.bucket_weights.float()
        byte_values = torch.arange(256, device=device)
        codes = (byte_values[:, None] >> self._shifts(device)) & (
            (1 << self.nbits) - 1
        )  # (256, codes_per_byte)
        dims = torch.arange(padded_dim, device=device).view(self.bytes_per_vector, 1, self.codes_per_byte)
        return weights[dims, codes[None]].reshape(-1, self.codes_per_byte)
