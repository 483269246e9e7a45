"""A loaded compressed index: memory-mapped arrays, document lookup, incremental add and delete."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmr.index.codec import ResidualCodec
from flmr.index.errors import IndexFormatError
from flmr.index.inputs import DEFAULT_DOCS_PER_CHUNK, EmbeddingsInput, iter_chunks
from flmr.index.kmeans import CentroidAssigner
from flmr.index.segments import Segment, ivf_from_keys, ivf_to_keys, write_segment
from flmr.index.storage import (
    MANIFEST_NAME,
    StoredDocument,
    fsync_path,
    load_array,
    read_manifest,
    save_array,
    write_manifest,
)


def concat_ranges(starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions start..start+length-1 of every range laid end to end, and the range each belongs to.

    Example:
        >>> concat_ranges(torch.tensor([10, 3]), torch.tensor([2, 3]))
        (tensor([10, 11,  3,  4,  5]), tensor([0, 0, 1, 1, 1]))
    """
    owners = torch.arange(starts.shape[0], device=starts.device).repeat_interleave(lengths)
    run_starts = torch.cumsum(lengths, 0) - lengths  # where each range begins in the output
    positions = torch.arange(owners.shape[0], device=starts.device) + (starts - run_starts).repeat_interleave(
        lengths
    )
    return positions, owners


class Index:
    """A PLAID / ColBERTv2 style compressed late-interaction index stored in a folder.

    Arrays are memory-mapped (``mmap=True``), so an index larger than RAM can be searched. Documents are
    addressed by pid, their position in the collection (0..num_documents-1).

    Example:
        >>> index = Index.load("my_index")  # doctest: +SKIP
        >>> index.num_documents, index.document(0).text  # doctest: +SKIP
        >>> new_pids = index.add([torch.randn(40, index.dim)], documents=[{"id": "new"}])  # doctest: +SKIP
        >>> index.delete([3, 5])  # doctest: +SKIP
    """

    def __init__(self, path: Path, mmap: bool = True) -> None:
        self.path = path
        self.mmap = mmap
        self._load_state()

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> Index:
        """Open the index at ``path``; ``IndexFormatError`` if it is not a complete index."""
        return cls(Path(path), mmap)

    # -- properties ------------------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.manifest["settings"])

    @property
    def encoder(self) -> dict[str, Any]:
        """Free-form description of the encoder that produced the embeddings, as given at build time."""
        return dict(self.manifest["encoder"])

    @property
    def generation(self) -> int:
        """Incremented by every add or delete; searchers use it to notice changes."""
        return int(self.manifest["generation"])

    @property
    def dim(self) -> int:
        return self.codec.dim

    @property
    def nbits(self) -> int:
        return self.codec.nbits

    @property
    def num_partitions(self) -> int:
        return self.codec.num_partitions

    @property
    def num_documents(self) -> int:
        return self.doclens.shape[0]

    @property
    def num_vectors(self) -> int:
        return int(self.doc_offsets[-1])

    @property
    def stores_vectors(self) -> bool:
        """Whether the index keeps every vector in float16 besides its code (exact re-ranking)."""
        return bool(self.settings.get("stores_vectors", False))

    @property
    def deleted_pids(self) -> torch.Tensor:
        return self.deleted.nonzero().flatten()

    # -- reading ---------------------------------------------------------------------------------------
    def document(self, pid: int) -> StoredDocument:
        """Stored fields of document ``pid`` (read from disk, the store is never loaded whole)."""
        if not 0 <= pid < self.num_documents:
            raise IndexError(f"pid {pid} out of range: the index has {self.num_documents} documents")
        segment = self._segments[self._segment_of_pid(pid)]
        return segment.store.get(pid - segment.first_pid)

    def vector_positions(self, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global positions of the vectors of ``pids`` and, for each, the index into ``pids`` it belongs to."""
        pids = pids.long().cpu()
        return concat_ranges(self.doc_offsets[pids], self.doclens[pids])

    def inverted_lists(self, centroid_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pids in the inverted lists of ``centroid_ids``, and the index into ``centroid_ids`` of each."""
        centroid_ids = centroid_ids.long().cpu().numpy()
        starts = torch.from_numpy(self.ivf_offsets[centroid_ids])
        positions, owners = concat_ranges(
            starts, torch.from_numpy(self.ivf_offsets[centroid_ids + 1]) - starts
        )
        return torch.from_numpy(self.ivf_pids[positions.numpy()].astype(np.int64)), owners

    def candidate_pids(self, centroid_ids: torch.Tensor) -> torch.Tensor:
        """Sorted live pids having a vector in any of the inverted lists of ``centroid_ids``."""
        pids = self.inverted_lists(centroid_ids)[0].unique()
        return pids[~self.deleted[pids]]

    def gather_centroid_ids(self, positions: torch.Tensor) -> torch.Tensor:
        """Centroid id (int64) of the vectors at global ``positions``."""
        return torch.from_numpy(self._gather("centroid_ids", positions).astype(np.int64))

    def gather_codes(self, positions: torch.Tensor) -> torch.Tensor:
        """Residual codes (n, bytes_per_vector) uint8 of the vectors at global ``positions``."""
        return torch.from_numpy(self._gather("codes", positions))

    def gather_vectors(self, positions: torch.Tensor) -> torch.Tensor:
        """Stored float16 vectors (n, dim) at global ``positions``; needs an index that stores vectors."""
        if not self.stores_vectors:
            raise ValueError(f"the index at {self.path} keeps only compressed vectors (stores_vectors=False)")
        return torch.from_numpy(self._gather("vectors", positions))

    def document_vectors(
        self, pids: torch.Tensor, normalize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The vectors search scores ``pids`` by, end to end, and the index into ``pids`` of each.

        These are the stored vectors (float32 from float16, as encoded) when the index keeps them, so
        scores equal exact MaxSim; otherwise the decompressed vectors (``normalize`` as in ``decompress``).
        """
        if not self.stores_vectors:
            return self.decompress(pids, normalize)
        positions, owners = self.vector_positions(pids)
        return self.gather_vectors(positions).float(), owners

    def decompress(self, pids: torch.Tensor, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructed vectors of ``pids`` laid end to end, and the index into ``pids`` of each vector."""
        positions, owners = self.vector_positions(pids)
        vectors = self.codec.decompress(
            self.gather_codes(positions), self.gather_centroid_ids(positions), normalize
        )
        return vectors, owners

    def iter_documents(
        self, docs_per_chunk: int = DEFAULT_DOCS_PER_CHUNK
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (first_pid, pids) runs covering every live document, for exhaustive scans."""
        for first_pid in range(0, self.num_documents, docs_per_chunk):
            pids = torch.arange(first_pid, min(first_pid + docs_per_chunk, self.num_documents))
            yield first_pid, pids[~self.deleted[pids]]

    # -- updating --------------------------------------------------------------------------------------
    def add(
        self,
        embeddings: EmbeddingsInput,
        doclens: torch.Tensor | Sequence[int] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        device: str | torch.device = "cpu",
    ) -> range:
        """Append documents, compressed with the existing centroids and codec; returns their new pids.

        Accepts the same inputs as ``IndexWriter.write``. The update is atomic: a crash leaves the index
        as it was.
        """
        self._remove_unreferenced_files()
        generation = self.generation + 1
        folder_name = f"segments/{generation:06d}-{uuid.uuid4().hex[:6]}"
        device = torch.device(device)
        written = write_segment(
            self.path / folder_name,
            iter_chunks(embeddings, doclens, documents),
            self.codec.to(device),
            CentroidAssigner(self.codec.centroids.to(device), seed=self.settings["seed"]),
            first_pid=self.num_documents,
            device=device,
            store_vectors=self.stores_vectors,
        )
        if written.num_documents == 0:
            shutil.rmtree(self.path / folder_name)
            return range(self.num_documents, self.num_documents)
        fsync_path(self.path / folder_name)
        fsync_path(self.path / "segments")
        existing = ivf_to_keys(self.ivf_offsets, self.ivf_pids)
        offsets, pids = ivf_from_keys(torch.cat([existing, written.ivf_keys]), self.num_partitions)
        manifest = dict(self.manifest)
        manifest["segments"] = [
            *manifest["segments"],
            {
                "folder": folder_name,
                "num_documents": written.num_documents,
                "num_vectors": written.num_vectors,
            },
        ]
        self._commit(manifest, generation, ivf=(offsets, pids))
        return range(self.num_documents - written.num_documents, self.num_documents)

    def delete(self, pids: Sequence[int] | torch.Tensor) -> None:
        """Mark documents as deleted: they never come back from search. Atomic, like ``add``."""
        pids = torch.as_tensor(pids, dtype=torch.long).flatten()
        bad = pids[(pids < 0) | (pids >= self.num_documents)]
        if bad.numel():
            raise IndexError(
                f"cannot delete pids {bad.tolist()}: the index has {self.num_documents} documents"
            )
        self._remove_unreferenced_files()
        deleted = self.deleted.clone()
        deleted[pids] = True
        self._commit(dict(self.manifest), self.generation + 1, deleted=deleted)

    # -- internals -------------------------------------------------------------------------------------
    def _commit(
        self,
        manifest: dict[str, Any],
        generation: int,
        ivf: tuple[np.ndarray, np.ndarray] | None = None,
        deleted: torch.Tensor | None = None,
    ) -> None:
        files = dict(manifest["files"])
        if ivf is not None:
            files["ivf_offsets"], files["ivf_pids"] = (
                f"ivf_offsets.{generation}.npy",
                f"ivf_pids.{generation}.npy",
            )
            save_array(self.path / files["ivf_offsets"], ivf[0])
            save_array(self.path / files["ivf_pids"], ivf[1])
        deleted = self.deleted if deleted is None else deleted
        files["deleted"] = f"deleted.{generation}.npy"
        save_array(self.path / files["deleted"], deleted.nonzero().flatten().numpy())
        fsync_path(self.path)
        manifest["files"] = files
        manifest["generation"] = generation
        manifest["counts"] = {
            "num_documents": sum(s["num_documents"] for s in manifest["segments"]),
            "num_vectors": sum(s["num_vectors"] for s in manifest["segments"]),
            "num_deleted": int(deleted.sum()),
            "num_ivf_entries": int((ivf[1] if ivf is not None else self.ivf_pids).shape[0]),
        }
        write_manifest(self.path, manifest)
        self._load_state()
        self._remove_unreferenced_files()

    def _load_state(self) -> None:
        manifest = read_manifest(self.path)
        files = manifest["files"]
        self.manifest = manifest
        self.codec = ResidualCodec.load(self.path, files, int(manifest["settings"]["nbits"]))
        self._segments: list[Segment] = []
        first_pid = first_vector = 0
        for entry in manifest["segments"]:
            segment = Segment.load(self.path / entry["folder"], first_pid, first_vector, self.mmap)
            if (
                segment.doclens.shape[0] != entry["num_documents"]
                or segment.num_vectors != entry["num_vectors"]
            ):
                raise IndexFormatError(f"{self.path / entry['folder']}: sizes disagree with {MANIFEST_NAME}")
            self._segments.append(segment)
            first_pid += entry["num_documents"]
            first_vector += entry["num_vectors"]
        self._segment_first_vectors = np.array([s.first_vector for s in self._segments], dtype=np.int64)
        self._segment_first_pids = np.array([s.first_pid for s in self._segments], dtype=np.int64)
        self.doclens = torch.from_numpy(np.concatenate([s.doclens for s in self._segments]))
        self.doc_offsets = torch.cat([self.doclens.new_zeros(1), self.doclens.cumsum(0)])
        self.ivf_offsets = np.array(load_array(self.path / files["ivf_offsets"]))
        self.ivf_pids = load_array(self.path / files["ivf_pids"], self.mmap)
        self.deleted = torch.zeros(self.num_documents, dtype=torch.bool)
        self.deleted[torch.from_numpy(np.array(load_array(self.path / files["deleted"]), dtype=np.int64))] = (
            True
        )

    def _gather(self, array_name: str, positions: torch.Tensor) -> np.ndarray:
        positions_np = positions.cpu().numpy()
        if len(self._segments) == 1:
            return np.ascontiguousarray(getattr(self._segments[0], array_name)[positions_np])
        first = getattr(self._segments[0], array_name)
        gathered = np.empty((positions_np.shape[0], *first.shape[1:]), dtype=first.dtype)
        owner = np.searchsorted(self._segment_first_vectors, positions_np, side="right") - 1
        for number, segment in enumerate(self._segments):
            rows = np.flatnonzero(owner == number)
            gathered[rows] = getattr(segment, array_name)[positions_np[rows] - segment.first_vector]
        return gathered

    def _segment_of_pid(self, pid: int) -> int:
        return int(np.searchsorted(self._segment_first_pids, pid, side="right")) - 1

    def _remove_unreferenced_files(self) -> None:
        """Delete leftovers of interrupted or superseded writes (never anything the manifest names).

        Folders other than ``segments`` are left alone: caches such as a BM25 index may live there.
        """
        referenced = {MANIFEST_NAME, *self.manifest["files"].values()}
        referenced_segments = {Path(s["folder"]).name for s in self.manifest["segments"]}
        for path in self.path.iterdir():
            if path.name == "segments":
                for segment in path.iterdir():
                    if segment.name not in referenced_segments:
                        shutil.rmtree(segment)
            elif path.is_file() and path.name not in referenced:
                path.unlink()
