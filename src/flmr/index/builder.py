"""Writing a new index: sample, train centroids and codec, compress every chunk, build inverted lists."""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmr.encoding.identity import EncoderIdentity
from flmr.index.codec import ResidualCodec, check_nbits, stored_precision
from flmr.index.index import Index
from flmr.index.inputs import (
    DEFAULT_DOCS_PER_CHUNK,
    DocumentChunk,
    EmbeddingsInput,
    check_document_list,
    is_document_list,
    iter_chunks,
)
from flmr.index.kmeans import KMEANS_ITERATIONS, CentroidAssigner, default_num_partitions, train_centroids
from flmr.index.segments import ivf_from_keys, segment_files, write_segment
from flmr.index.storage import (
    FORMAT_NAME,
    FORMAT_VERSION,
    build_folder,
    checksummed_files,
    publish_build_folder,
    save_array,
    write_manifest,
)

SAMPLE_POINTS_PER_PARTITION = 32
MAX_HELDOUT_VECTORS = 50_000
# a stream of chunks of unknown size is buffered up to this many vectors to size the k-means sample
MAX_UNSIZED_BUFFER_VECTORS = 1 << 21


def train_codec(
    vectors: torch.Tensor,
    nbits: int = 2,
    num_partitions: int | None = None,
    kmeans_iterations: int = KMEANS_ITERATIONS,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> ResidualCodec:
    """Train centroids and the residual quantiser on a sample of token vectors (n, dim).

    A tenth of the sample (at most 50,000 vectors) is held out from k-means to fit the quantiser on
    residuals the centroids have not seen. ``num_partitions`` defaults to ColBERT's rule applied to
    the sample size (pass it explicitly for a sample of a larger collection), capped by the sample.

    Example:
        >>> sample = torch.nn.functional.normalize(torch.randn(4000, 16), dim=-1)
        >>> codec = train_codec(sample, nbits=2, num_partitions=64)
        >>> codec.num_partitions, codec.bytes_per_vector
        (64, 4)
    """
    check_nbits(nbits)
    device = torch.device(device)
    vectors = vectors.float()
    heldout_size = max(1, min(MAX_HELDOUT_VECTORS, vectors.shape[0] // 10))
    heldout, training = vectors[:heldout_size], vectors[heldout_size:]
    if training.shape[0] == 0:
        training = heldout  # a collection of one vector
    requested = num_partitions or default_num_partitions(vectors.shape[0])
    centroids = train_centroids(training, min(requested, training.shape[0]), kmeans_iterations, seed)
    centroids = stored_precision(centroids).to(device)  # as the codec will hold them
    assigner = CentroidAssigner(centroids, seed=seed)
    heldout = heldout.to(device)
    return ResidualCodec.fit(centroids, heldout - centroids[assigner.assign(heldout)], nbits)


def codec_sample_size(
    total_vectors: float, num_partitions: int | None = None, kmeans_sample_size: int | None = None
) -> int:
    """Vectors to sample for ``train_codec``, as ``IndexWriter`` sizes it: ``kmeans_sample_size``, or 32
    per partition (``num_partitions`` defaulting to ColBERT's rule for ``total_vectors``), at most all.

    Example:
        >>> codec_sample_size(1_000_000, num_partitions=4096), codec_sample_size(500, num_partitions=64)
        (131072, 500)
    """
    requested = num_partitions or default_num_partitions(total_vectors)
    return int(min(total_vectors, kmeans_sample_size or SAMPLE_POINTS_PER_PARTITION * requested))


@dataclass
class _Sample:
    vectors: torch.Tensor
    chunks: Iterator[DocumentChunk]
    total_vectors: int


@dataclass
class IndexWriter:
    """Builds a compressed PLAID index folder from document token embeddings.

    Args:
        nbits: bits per residual dimension, one of 1, 2, 4, 8.
        num_partitions: number of centroids; default 2**floor(log2(64 * sqrt(num_vectors))), four times
            ColBERT's heuristic (see ``flmr.index.kmeans.PARTITIONS_PER_SQRT_VECTOR``), capped by the
            number of sampled vectors.
        kmeans_sample_size: vectors sampled for k-means and the codec; default 32 per partition.
        kmeans_iterations: k-means iterations (ColBERTv2's default, 4).
        seed: seed of every random choice (sampling, k-means), so builds are reproducible.
        docs_per_chunk: documents compressed at a time (bounds memory for in-memory inputs).
        device: where assignment and compression run ("cpu", "cuda").
        codec: centroids and residual quantiser trained beforehand (see ``train_codec``), e.g. one codec
            shared by the shards of a collection; the writer then only compresses.
        store_vectors: also keep every vector in float16 (``2 * dim`` bytes per vector on disk, read
            by memory map, only for the few documents re-ranked), so search re-ranks by exact MaxSim:
            its scores equal exact search's and recall is lost only in candidate generation. ``False``
            keeps only the codes and re-ranks on decompressed vectors (ColBERTv2/PLAID's trade-off).
            Default ``True`` at every ``nbits``: on 10k Debian documents 8-bit codes alone re-ranked to
            0.929 recall@10 against 0.939 and took 3.8x longer (decompressing the 1,024 re-ranked
            documents), slower than exact search (see the README's search-quality table).
        show_progress: show a progress bar while compressing.

    Example:
        >>> docs = [torch.nn.functional.normalize(torch.randn(30, 16), dim=-1) for _ in range(100)]
        >>> index = IndexWriter(nbits=2, show_progress=False).write("random_index", docs)
        >>> index.num_documents, index.dim
        (100, 16)
    """

    nbits: int = 2
    num_partitions: int | None = None
    kmeans_sample_size: int | None = None
    kmeans_iterations: int = KMEANS_ITERATIONS
    seed: int = 0
    docs_per_chunk: int = DEFAULT_DOCS_PER_CHUNK
    device: str | torch.device = "cpu"
    codec: ResidualCodec | None = None
    store_vectors: bool = True
    show_progress: bool = True

    def __post_init__(self) -> None:
        check_nbits(self.nbits)
        if self.codec is not None and self.codec.nbits != self.nbits:
            raise ValueError(f"the given codec has nbits={self.codec.nbits}, the writer nbits={self.nbits}")

    def write(
        self,
        path: str | Path,
        embeddings: EmbeddingsInput,
        doclens: torch.Tensor | Sequence[int] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        *,
        encoder: EncoderIdentity | Mapping[str, Any] | None = None,
        encoding: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        expected_num_vectors: int | None = None,
    ) -> Index:
        """Build the index at ``path`` and return it loaded.

        ``embeddings`` is a list of per-document (n_tokens_i, dim) tensors, a flat (N, dim) tensor with
        ``doclens``, or an iterable of chunks (see ``iter_chunks``) for collections larger than RAM. With a
        stream, k-means samples its first chunks, so shuffle the collection or pass ``num_partitions`` or
        ``expected_num_vectors`` for a stream of over 2M vectors. ``encoder`` (an [`EncoderIdentity`] or its JSON
        object) is stored in the manifest, and so is ``encoding`` (how the documents were encoded, e.g.
        ``{"max_length": 512}``), which ``Retriever.add`` reuses. Documents with no vectors are allowed
        and are never retrieved. The new index replaces an older one (``overwrite=True``) under the
        index's write lock; a build killed at any point leaves the older index (restored on next open).
        """
        destination = Path(path)
        with build_folder(destination, overwrite) as folder:
            manifest = self._build(
                folder,
                embeddings,
                doclens,
                documents,
                EncoderIdentity.from_json(encoder).to_json(),
                expected_num_vectors,
            )
            manifest["index_id"] = uuid.uuid4().hex
            manifest["encoding"] = dict(encoding or {})
            relatives = [*manifest["files"].values()]
            for segment in manifest["segments"]:
                relatives += segment_files(segment["folder"], self.store_vectors)
            manifest["checksums"] = checksummed_files(folder, relatives)
            write_manifest(folder, manifest)
            publish_build_folder(folder, destination, overwrite)
        return Index.load(destination)

    def _build(
        self,
        folder: Path,
        embeddings: EmbeddingsInput,
        doclens: torch.Tensor | Sequence[int] | None,
        documents: Sequence[Mapping[str, Any]] | None,
        encoder: dict[str, Any],
        expected_num_vectors: int | None,
    ) -> dict[str, Any]:
        started = time.time()
        device = torch.device(self.device)
        chunks = iter_chunks(embeddings, doclens, documents, self.docs_per_chunk)
        if self.codec is None:
            sample = self._sample(embeddings, chunks, expected_num_vectors)
            requested = self.num_partitions or default_num_partitions(sample.total_vectors)
            codec = train_codec(
                sample.vectors, self.nbits, requested, self.kmeans_iterations, self.seed, device
            )
            chunks, sample_size = sample.chunks, int(sample.vectors.shape[0])
        else:
            codec, requested, sample_size = self.codec.to(device), self.codec.num_partitions, 0
        assigner = CentroidAssigner(codec.centroids, seed=self.seed)
        total_chunks = self._count_chunks(embeddings, doclens)
        written = write_segment(
            folder / "segments" / "000000",
            chunks,
            codec,
            assigner,
            0,
            device,
            total_chunks,
            self.store_vectors,
            self.show_progress,
        )
        if written.num_vectors == 0:
            raise ValueError("empty collection: no document has any vector")
        ivf_offsets, ivf_pids = ivf_from_keys(written.ivf_keys, codec.num_partitions)
        files = {
            **codec.save(folder),
            "ivf_offsets": "ivf_offsets.0.npy",
            "ivf_pids": "ivf_pids.0.npy",
            "deleted": "deleted.0.npy",
        }
        save_array(folder / files["ivf_offsets"], ivf_offsets)
        save_array(folder / files["ivf_pids"], ivf_pids)
        save_array(folder / files["deleted"], np.empty(0, dtype=np.int64))
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "generation": 0,
            "settings": {
                "nbits": self.nbits,
                "dim": codec.dim,
                "num_partitions": codec.num_partitions,
                "requested_num_partitions": requested,
                "kmeans_sample_size": sample_size,
                "kmeans_iterations": self.kmeans_iterations,
                "seed": self.seed,
                "bytes_per_vector": codec.bytes_per_vector,
                "stores_vectors": self.store_vectors,
            },
            "counts": {
                "num_documents": written.num_documents,
                "num_vectors": written.num_vectors,
                "num_deleted": 0,
                "num_ivf_entries": int(ivf_pids.shape[0]),
            },
            "encoder": encoder,
            "build_seconds": round(time.time() - started, 3),
            "files": files,
            "segments": [
                {
                    "folder": "segments/000000",
                    "num_documents": written.num_documents,
                    "num_vectors": written.num_vectors,
                }
            ],
        }

    def _sample_size(self, total_vectors: int) -> int:
        return codec_sample_size(total_vectors, self.num_partitions, self.kmeans_sample_size)

    def _sample(
        self, embeddings: EmbeddingsInput, chunks: Iterator[DocumentChunk], expected_num_vectors: int | None
    ) -> _Sample:
        generator = torch.Generator().manual_seed(self.seed)
        if isinstance(embeddings, torch.Tensor):
            total = embeddings.shape[0]
            if total == 0 or embeddings.ndim != 2:
                raise ValueError(
                    f"empty collection or bad shape: embeddings of shape {tuple(embeddings.shape)}"
                )
            rows = torch.randperm(total, generator=generator)[: self._sample_size(total)]
            return _Sample(embeddings[rows].float(), chunks, total)
        if is_document_list(embeddings):
            check_document_list(embeddings)
            total = sum(d.shape[0] for d in embeddings)
            size = self._sample_size(total)
            picked, count = [], 0
            for doc in torch.randperm(len(embeddings), generator=generator).tolist():
                if count >= size:
                    break
                picked.append(embeddings[doc].reshape(-1, embeddings[doc].shape[-1]))
                count += picked[-1].shape[0]
            return _Sample(self._subsample(picked, size, generator), chunks, total)
        return self._sample_stream(chunks, expected_num_vectors, generator)

    def _sample_stream(
        self, chunks: Iterator[DocumentChunk], expected_num_vectors: int | None, generator: torch.Generator
    ) -> _Sample:
        sized = expected_num_vectors is not None or (self.num_partitions and self.kmeans_sample_size)
        limit = self._sample_size(expected_num_vectors or math.inf) if sized else MAX_UNSIZED_BUFFER_VECTORS
        buffered: list[DocumentChunk] = []
        count = 0
        for chunk in chunks:
            buffered.append(chunk)
            count += chunk.embeddings.shape[0]
            if count >= limit:
                break
        else:  # the whole stream fits in the buffer: its size is known exactly
            return _Sample(
                self._subsample([c.embeddings for c in buffered], self._sample_size(count), generator),
                iter(buffered),
                count,
            )
        if not sized:
            raise ValueError(
                f"the chunk stream has over {MAX_UNSIZED_BUFFER_VECTORS} vectors: pass expected_num_vectors "
                "(or num_partitions and kmeans_sample_size) to size the k-means sample"
            )
        total = expected_num_vectors or count
        return _Sample(
            self._subsample([c.embeddings for c in buffered], limit, generator),
            itertools.chain(buffered, chunks),
            total,
        )

    @staticmethod
    def _subsample(parts: list[torch.Tensor], size: int, generator: torch.Generator) -> torch.Tensor:
        if not parts:
            raise ValueError("empty collection: no documents were given")
        vectors = torch.cat([p.detach().float() for p in parts])
        if vectors.shape[0] == 0:
            raise ValueError("empty collection: no document has any vector")
        return vectors[torch.randperm(vectors.shape[0], generator=generator)[:size]]

    def _count_chunks(
        self, embeddings: EmbeddingsInput, doclens: torch.Tensor | Sequence[int] | None
    ) -> int | None:
        if isinstance(embeddings, torch.Tensor) and doclens is not None:
            return math.ceil(len(doclens) / self.docs_per_chunk)
        if is_document_list(embeddings):
            return math.ceil(len(embeddings) / self.docs_per_chunk)
        return None
