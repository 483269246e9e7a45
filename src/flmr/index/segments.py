"""Segments (runs of consecutive documents written together) and the inverted lists over all of them.

A segment folder holds ``codes.npy`` (n_vectors, bytes_per_vector) uint8, ``centroid_ids.npy``
(n_vectors,) int32, ``doclens.npy`` (n_docs,) int32, the document store and, when the index keeps them,
``vectors.npy`` (n_vectors, dim) float16, the vectors as encoded, for exact re-ranking. A build writes one
segment; each ``Index.add`` appends another, so updates never rewrite the bulk of the index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from flmr.index.codec import ResidualCodec
from flmr.index.inputs import DocumentChunk, validate_chunk
from flmr.index.kmeans import CentroidAssigner
from flmr.index.storage import (
    DocumentStoreReader,
    DocumentStoreWriter,
    GrowingArrayFile,
    damaged,
    file_checksum,
    load_array,
)

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


SEGMENT_FILES = ("codes.npy", "centroid_ids.npy", "doclens.npy", "document_offsets.npy", "documents.jsonl")
VECTORS_FILE = "vectors.npy"


def segment_files(folder: str, stores_vectors: bool) -> list[str]:
    """Relative paths of the files of the segment in ``folder`` (relative to the index)."""
    names = [*SEGMENT_FILES, VECTORS_FILE] if stores_vectors else list(SEGMENT_FILES)
    return [f"{folder}/{name}" for name in names]


def check_small_file(index_folder: Path, relative: str, checksums: Mapping[str, str]) -> None:
    """Compare a small file (read whole at load anyway) with its recorded checksum, if there is one."""
    expected = checksums.get(relative)
    if expected is not None and file_checksum(index_folder / relative) != expected:
        raise damaged(index_folder / relative, "its contents do not match the checksum recorded at commit")


@dataclass
class Segment:
    """A loaded segment: memory-mapped codes and centroid ids, document lengths and stored fields."""

    folder: Path
    first_pid: int
    first_vector: int
    codes: np.ndarray
    centroid_ids: np.ndarray
    doclens: np.ndarray
    store: DocumentStoreReader
    vectors: np.ndarray | None  # float16 (n_vectors, dim) when the index keeps full-precision vectors
    _ids: list[Any] | None = None
    _distinct: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def load(
        cls,
        index_folder: Path,
        entry: Mapping[str, Any],
        first_pid: int,
        first_vector: int,
        settings: Mapping[str, Any],
        checksums: Mapping[str, str],
        mmap: bool,
    ) -> Segment:
        """Open the segment of manifest ``entry``, checking every file's shape against the manifest.

        Raises ``IndexFormatError`` naming the first missing or damaged file.
        """
        folder = index_folder / entry["folder"]
        num_documents, num_vectors = entry["num_documents"], entry["num_vectors"]
        for name in ("doclens.npy", "document_offsets.npy"):
            if (folder / name).is_file():
                check_small_file(index_folder, f"{entry['folder']}/{name}", checksums)
        doclens = np.asarray(load_array(folder / "doclens.npy", False, (num_documents,), np.int32), np.int64)
        if (doclens < 0).any() or int(doclens.sum()) != num_vectors:
            raise damaged(
                folder / "doclens.npy", f"its lengths do not sum to the {num_vectors} vectors recorded"
            )
        offsets = load_array(folder / "document_offsets.npy", False, (num_documents + 1,), np.int64)
        if offsets[0] != 0 or (np.diff(offsets) <= 0).any():
            raise damaged(folder / "document_offsets.npy", "its offsets do not increase from 0")
        bytes_per_vector = settings.get("bytes_per_vector")
        vectors = None
        if settings.get("stores_vectors", False) or (folder / VECTORS_FILE).exists():
            vectors = load_array(folder / VECTORS_FILE, mmap, (num_vectors, settings["dim"]), np.float16)
        return cls(
            folder,
            first_pid,
            first_vector,
            load_array(folder / "codes.npy", mmap, (num_vectors, bytes_per_vector), np.uint8),
            load_array(folder / "centroid_ids.npy", mmap, (num_vectors,), np.int32),
            doclens,
            DocumentStoreReader(folder, offsets),
            vectors,
        )

    @property
    def num_vectors(self) -> int:
        return self.codes.shape[0]

    def ids(self) -> list[Any]:
        """Stored id of every document of the segment, read once (segments never change)."""
        if self._ids is None:
            self._ids = self.store.ids()
        return self._ids

    def distinct_centroids(self, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
        """Each document's distinct centroid ids, ascending, end to end, and where each document's start.

        Returns (offsets (n_docs + 1,) int64, centroid ids (n,) int32), computed on first use (one
        sort of the segment's centroid ids: 0.05 s for 1.8M vectors) and kept, as segments never change.

        Raises:
            IndexFormatError: ``centroid_ids.npy`` holds an id outside ``0..num_partitions - 1``.
        """
        if self._distinct is None:
            centroid_ids = np.asarray(self.centroid_ids, dtype=np.int64)
            if centroid_ids.size and (centroid_ids.min() < 0 or centroid_ids.max() >= num_partitions):
                raise damaged(self.folder / "centroid_ids.npy", "it holds centroid ids out of range")
            documents = np.repeat(np.arange(self.doclens.shape[0], dtype=np.int64), self.doclens)
            keys = np.sort(documents * num_partitions + centroid_ids, kind="stable")  # runs by document
            keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if keys.size else keys
            counts = np.bincount(keys // num_partitions, minlength=self.doclens.shape[0])
            offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
            self._distinct = offsets, (keys % num_partitions).astype(np.int32)
        return self._distinct
