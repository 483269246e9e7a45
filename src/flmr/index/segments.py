"""Segments (runs of consecutive documents written together) and the inverted lists over all of them.

A segment folder holds ``codes.npy`` (n_vectors, bytes_per_vector) uint8, ``centroid_ids.npy``
(n_vectors,) int32, ``doclens.npy`` (n_docs,) int32, the document store and, when the index keeps them,
``vectors.npy`` (n_vectors, dim) float16, the vectors as encoded, for exact re-ranking. A build writes one
segment; each ``Index.add`` appends another, so updates never rewrite the bulk of the index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from flmr.index.codec import ResidualCodec
from flmr.index.inputs import DocumentChunk, validate_chunk
from flmr.index.kmeans import CentroidAssigner
from flmr.index.storage import DocumentStoreReader, DocumentStoreWriter, GrowingArrayFile, load_array

_PID_BITS = 32  # an inverted-list entry is packed as (centroid_id << 32) | pid, so sorting orders both


@dataclass
class WrittenSegment:
    """What writing a segment produced: its counts and its (centroid, pid) inverted-list entries."""

    num_documents: int
    num_vectors: int
    ivf_keys: torch.Tensor  # int64, unique within the segment


def write_segment(
    folder: Path,
    chunks: Iterable[DocumentChunk],
    codec: ResidualCodec,
    assigner: CentroidAssigner,
    first_pid: int,
    device: torch.device,
    total_chunks: int | None = None,
    store_vectors: bool = False,
    show_progress: bool = True,
) -> WrittenSegment:
    """Compress ``chunks`` with ``codec`` into a new segment folder; pids start at ``first_pid``.

    ``store_vectors`` also keeps every vector as float16, for exact re-ranking; ``show_progress`` shows a
    progress bar.
    """
    folder.mkdir(parents=True)
    pid = first_pid
    keys = []
    store = DocumentStoreWriter(folder)
    with (
        GrowingArrayFile(folder / "codes.npy", np.uint8, (codec.bytes_per_vector,)) as codes_file,
        GrowingArrayFile(folder / "centroid_ids.npy", np.int32, ()) as centroid_ids_file,
        GrowingArrayFile(folder / "doclens.npy", np.int32, ()) as doclens_file,
        contextlib.ExitStack() as optional_files,
    ):
        vectors_file = (
            optional_files.enter_context(GrowingArrayFile(folder / "vectors.npy", np.float16, (codec.dim,)))
            if store_vectors
            else None
        )
        for raw_chunk in tqdm(
            chunks,
            desc="compressing",
            unit="chunk",
            total=total_chunks,
            leave=False,
            disable=not show_progress,
        ):
            chunk = validate_chunk(raw_chunk, codec.dim, pid)
            vectors = chunk.embeddings.to(device)
            centroid_ids = assigner.assign(vectors)
            codes_file.append(codec.compress(vectors, centroid_ids).cpu().numpy())
            if vectors_file is not None:
                vectors_file.append(chunk.embeddings.detach().cpu().to(torch.float16).numpy())
            centroid_ids_file.append(centroid_ids.cpu().numpy())
            doclens_file.append(chunk.doclens.numpy())
            store.append(pid, chunk.documents, chunk.num_documents)
            pids = torch.arange(pid, pid + chunk.num_documents).repeat_interleave(chunk.doclens)
            keys.append(torch.unique((centroid_ids.cpu() << _PID_BITS) | pids))
            pid += chunk.num_documents
        num_vectors = centroid_ids_file.num_rows
    store.close()
    ivf_keys = torch.cat(keys) if keys else torch.empty(0, dtype=torch.long)
    return WrittenSegment(pid - first_pid, num_vectors, ivf_keys)


def ivf_from_keys(keys: torch.Tensor, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR inverted lists (offsets (P+1,) int64, pids int32) from unique packed (centroid, pid) keys."""
    keys = keys.sort().values
    centroid_ids = keys >> _PID_BITS
    counts = torch.bincount(centroid_ids, minlength=num_partitions)
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return offsets.numpy(), (keys & ((1 << _PID_BITS) - 1)).to(torch.int32).numpy()


def ivf_to_keys(offsets: np.ndarray, pids: np.ndarray) -> torch.Tensor:
    """The packed (centroid, pid) keys of existing inverted lists, to merge new entries into."""
    lengths = torch.from_numpy(np.diff(offsets))
    centroid_ids = torch.arange(lengths.shape[0]).repeat_interleave(lengths)
    return (centroid_ids << _PID_BITS) | torch.from_numpy(np.asarray(pids, dtype=np.int64))


@dataclass
class Segment:
    """A loaded segment: memory-mapped codes and centroid ids, document lengths and stored fields."""

    first_pid: int
    first_vector: int
    codes: np.ndarray
    centroid_ids: np.ndarray
    doclens: np.ndarray
    store: DocumentStoreReader
    vectors: np.ndarray | None  # float16 (n_vectors, dim) when the index keeps full-precision vectors

    @classmethod
    def load(cls, folder: Path, first_pid: int, first_vector: int, mmap: bool) -> Segment:
        return cls(
            first_pid,
            first_vector,
            load_array(folder / "codes.npy", mmap),
            load_array(folder / "centroid_ids.npy", mmap),
            np.asarray(load_array(folder / "doclens.npy", mmap=False), dtype=np.int64),
            DocumentStoreReader(folder),
            load_array(folder / "vectors.npy", mmap) if (folder / "vectors.npy").exists() else None,
        )

    @property
    def num_vectors(self) -> int:
        return self.codes.shape[0]
