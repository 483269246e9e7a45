"""A loaded compressed index: memory-mapped arrays, document lookup, incremental add, upsert and delete.

Concurrency (see also ``flmr.index.locking`` and ``flmr.index.storage``):

- Writers (``add``, ``upsert``, ``delete``, a build's publish) hold the index's write lock, and every
  write starts by re-reading the newest committed manifest under it, so a handle that is behind other
  processes' commits still commits on top of them, never from its stale state.
- An ``Index`` is a snapshot of one generation: every file it needs is memory-mapped or read when the
  generation is loaded, so a writer's clean-up of superseded files never disturbs it. A load that a
  commit overtakes (a file named by the manifest it read is gone) starts again on the newer manifest.
- ``refresh()`` moves a handle to the newest generation (a ``stat`` when nothing changed; a new
  generation loads only its new segments). ``Retriever`` calls refresh at the start of each call, at
  most every ``auto_refresh`` seconds, so a long-lived handle follows other processes' commits.
  Every method reads one generation; a search through several methods stays on one generation as long
  as no other thread refreshes the same object meanwhile (give each thread its own ``snapshot()``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmr.encoding.identity import EncoderIdentity
from flmr.index.codec import ResidualCodec
from flmr.index.errors import DAMAGED_HINT, DuplicateIdError, IndexFormatError, IndexInputError
from flmr.index.inputs import DEFAULT_DOCS_PER_CHUNK, DocumentChunk, EmbeddingsInput, iter_chunks
from flmr.index.kmeans import CentroidAssigner
from flmr.index.locking import DEFAULT_LOCK_TIMEOUT, write_lock
from flmr.index.segments import (
    Segment,
    check_small_file,
    ivf_from_keys,
    ivf_to_keys,
    segment_files,
    write_segment,
)
from flmr.index.storage import (
    MANIFEST_NAME,
    StoredDocument,
    checksummed_files,
    crash_point,
    damaged,
    fsync_path,
    load_array,
    manifest_token,
    needs_recovery,
    read_manifest,
    recover,
    save_array,
    write_manifest,
)
from flmr.index.verify import VerifyReport, verify_index

DEFAULT_AUTO_REFRESH = 1.0  # seconds between two checks for a newer generation
_LOAD_ATTEMPTS = 20


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


@dataclass
class Snapshot:
    """Everything a reader needs of one committed generation, loaded and checked."""

    path: Path
    manifest: dict[str, Any]
    token: tuple[int, ...] | None  # ``manifest_token`` of the manifest file it was read from
    codec: ResidualCodec
    segments: list[Segment]
    doclens: torch.Tensor  # (num_documents,) int64
    doc_offsets: torch.Tensor  # (num_documents + 1,) int64
    ivf_offsets: np.ndarray  # (num_partitions + 1,) int64
    ivf_pids: np.ndarray  # (num_ivf_entries,) int32, memory-mapped
    deleted: torch.Tensor  # (num_documents,) bool
    _live_ids: dict[Any, int] | None = field(default=None, repr=False)

    @property
    def identity(self) -> tuple[Any, int]:
        """(index id, generation): changes on every commit and when the index is rebuilt."""
        return self.manifest.get("index_id"), int(self.manifest["generation"])

    @functools.cached_property
    def segment_first_vectors(self) -> np.ndarray:
        return np.array([s.first_vector for s in self.segments], dtype=np.int64)

    @functools.cached_property
    def segment_first_pids(self) -> np.ndarray:
        return np.array([s.first_pid for s in self.segments], dtype=np.int64)

    @functools.cached_property
    def distinct_centroids(self) -> tuple[torch.Tensor, np.ndarray]:
        """Every document's distinct centroid ids end to end, and each document's offset into them."""
        parts = [segment.distinct_centroids(self.codec.num_partitions) for segment in self.segments]
        if len(parts) == 1:
            return torch.from_numpy(parts[0][0]), parts[0][1]
        counts = np.concatenate([np.diff(offsets) for offsets, _ in parts])
        offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
        return torch.from_numpy(offsets), np.concatenate([centroid_ids for _, centroid_ids in parts])

    def live_ids(self) -> dict[Any, int]:
        """``{stored id: pid}`` of the live documents (built on first use, from every segment's ids)."""
        if self._live_ids is None:
            deleted = self.deleted.numpy()
            ids: dict[Any, int] = {}
            for segment in self.segments:
                for row, document_id in enumerate(segment.ids()):
                    pid = segment.first_pid + row
                    if document_id is not None and not deleted[pid]:
                        ids[_id_key(document_id)] = pid
            self._live_ids = ids
        return self._live_ids

    @classmethod
    def load(
        cls,
        path: Path,
        manifest: dict[str, Any],
        token: tuple[int, ...] | None,
        mmap: bool,
        previous: Snapshot | None = None,
    ) -> Snapshot:
        """Load the generation ``manifest`` describes, reusing ``previous``'s segments where they are the same."""
        files, settings = manifest["files"], manifest["settings"]
        checksums = manifest.get("checksums", {})
        for name, relative in files.items():
            if name != "ivf_pids" and (path / relative).is_file():
                check_small_file(path, relative, checksums)
        codec = _load_codec(path, files, settings)
        reusable = {}
        if previous is not None and previous.manifest.get("index_id") == manifest.get("index_id"):
            reusable = {(s.folder.name, s.first_pid, s.num_vectors): s for s in previous.segments}
        segments: list[Segment] = []
        first_pid = first_vector = 0
        for entry in manifest["segments"]:
            segment = reusable.get((Path(entry["folder"]).name, first_pid, entry["num_vectors"]))
            if segment is None or segment.doclens.shape[0] != entry["num_documents"]:
                segment = Segment.load(path, entry, first_pid, first_vector, settings, checksums, mmap)
            segments.append(segment)
            first_pid += entry["num_documents"]
            first_vector += entry["num_vectors"]
        doclens = torch.from_numpy(np.concatenate([s.doclens for s in segments]))
        num_documents = first_pid
        ivf_offsets_path = path / files["ivf_offsets"]
        ivf_offsets = load_array(ivf_offsets_path, False, (codec.num_partitions + 1,), np.int64)
        ivf_pids = load_array(path / files["ivf_pids"], mmap, (None,), np.int32)
        if ivf_offsets[0] != 0 or (np.diff(ivf_offsets) < 0).any() or ivf_offsets[-1] != ivf_pids.shape[0]:
            raise damaged(
                ivf_offsets_path, f"its offsets do not run from 0 to the {ivf_pids.shape[0]} entries"
            )
        deleted_path = path / files["deleted"]
        deleted_pids = load_array(deleted_path, False, (None,), np.int64)
        if deleted_pids.size and (deleted_pids.min() < 0 or deleted_pids.max() >= num_documents):
            raise damaged(deleted_path, f"it names pids outside 0..{num_documents - 1}")
        deleted = torch.zeros(num_documents, dtype=torch.bool)
        deleted[torch.from_numpy(deleted_pids)] = True
        return cls(
            path,
            manifest,
            token,
            codec,
            segments,
            doclens,
            torch.cat([doclens.new_zeros(1), doclens.cumsum(0)]),
            ivf_offsets,
            ivf_pids,
            deleted,
        )


def _id_key(document_id: Any) -> Any:
    return document_id if isinstance(document_id, (str, int, float, bool)) else repr(document_id)


def _load_codec(path: Path, files: Mapping[str, str], settings: Mapping[str, Any]) -> ResidualCodec:
    try:
        codec = ResidualCodec.load(path, dict(files), int(settings["nbits"]))
    except IndexFormatError:
        raise
    except Exception as error:  # a codec array of the wrong shape or type
        names = sorted(set(files) - {"ivf_offsets", "ivf_pids", "deleted"})
        raise IndexFormatError(
            f"the codec files of {path} ({', '.join(names)}) are damaged: {error}; {DAMAGED_HINT}"
        ) from None
    if codec.dim != settings["dim"] or codec.num_partitions != settings["num_partitions"]:
        raise IndexFormatError(
            f"the codec files of {path} describe dim {codec.dim} and {codec.num_partitions} partitions, "
            f"{MANIFEST_NAME} dim {settings['dim']} and {settings['num_partitions']}; {DAMAGED_HINT}"
        )
    return codec


def committed_identity(path: Path) -> tuple[Any, int] | None:
    """(index id, generation) of the manifest committed at ``path`` now; None if it cannot be read."""
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_bytes())
        return manifest.get("index_id"), int(manifest["generation"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def load_snapshot(
    path: Path,
    mmap: bool = True,
    previous: Snapshot | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> Snapshot:
    """The newest committed generation of the index at ``path``.

    Restores an index that an interrupted overwrite left in a retired folder, and starts again when
    a commit overtakes the load. Raises ``IndexFormatError`` naming the missing or damaged file.
    """
    for _ in range(_LOAD_ATTEMPTS):
        if needs_recovery(path):
            recover(path, lock_timeout)
        token = manifest_token(path)
        try:
            return Snapshot.load(path, read_manifest(path), token, mmap, previous)
        except (
            IndexFormatError,
            FileNotFoundError,
        ) as error:  # a file removed under us: gone, or superseded?
            if manifest_token(path) == token and not needs_recovery(path):
                if isinstance(error, FileNotFoundError):
                    raise IndexFormatError(f"index file missing: {error.filename}; {DAMAGED_HINT}") from None
                raise
    raise IndexFormatError(
        f"the index at {path} changed {_LOAD_ATTEMPTS} times while it was opened; try again"
    )


class Index:
    """A PLAID / ColBERTv2 style compressed late-interaction index stored in a folder.

    Arrays are memory-mapped (``mmap=True``), so an index larger than RAM can be searched. Documents are
    addressed by pid, their position in the collection (0..num_documents-1); pids never change.

    Args:
        path: the index folder.
        mmap: memory-map the large arrays instead of reading them.
        lock_timeout: seconds a write waits for another writer before ``IndexLockedError``.
        auto_refresh: seconds between checks for a newer generation at the start of each ``Retriever``
            call (see ``refresh``); ``None`` keeps this handle on the generation it has.

    Example:
        >>> index = Index.load("my_index")
        >>> index.num_documents, index.document(0).id, index.pid_of("vim")
        (200, 'vim', 0)
        >>> index.add([torch.randn(40, index.dim)], documents=[{"id": "new"}])  # the new pids
        range(200, 201)
        >>> index.delete([3, 5])
        >>> index.deleted_pids.tolist(), index.num_documents
        ([3, 5], 201)
    """

    def __init__(
        self,
        path: Path,
        mmap: bool = True,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        auto_refresh: float | None = DEFAULT_AUTO_REFRESH,
    ) -> None:
        self.path = Path(path)
        self.mmap = mmap
        self.lock_timeout = lock_timeout
        self.auto_refresh = auto_refresh
        self._state = load_snapshot(self.path, mmap, lock_timeout=lock_timeout)
        self._checked_at = time.monotonic()

    @classmethod
    def load(
        cls,
        path: str | Path,
        mmap: bool = True,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        auto_refresh: float | None = DEFAULT_AUTO_REFRESH,
    ) -> Index:
        """Open the index at ``path``; ``IndexFormatError`` naming the file if it is incomplete or damaged."""
        return cls(Path(path), mmap, lock_timeout, auto_refresh)

    # -- generations -----------------------------------------------------------------------------------
    def refresh(self, if_older_than: float = 0.0) -> bool:
        """Move this handle to the newest committed generation; True if it changed.

        Costs one ``stat`` when nothing was committed; a new generation loads only its new files.
        ``if_older_than`` (seconds) skips the check when the last one is more recent. Do not call it
        while another thread searches through this same object (see the module docstring).
        """
        now = time.monotonic()
        if now - self._checked_at < if_older_than:
            return False
        self._checked_at = now
        state = self._state
        if manifest_token(self.path) == state.token:
            return False
        self._state = load_snapshot(self.path, self.mmap, state, self.lock_timeout)
        return self._state.identity != state.identity

    def refresh_if_due(self) -> bool:
        """``refresh`` at most every ``auto_refresh`` seconds (never when it is ``None``)."""
        return self.auto_refresh is not None and self.refresh(self.auto_refresh)

    def snapshot(self) -> Index:
        """A handle on this handle's current generation that shares its loaded data and never refreshes by itself."""
        pinned = copy.copy(self)
        pinned.auto_refresh = None
        return pinned

    def verify(self) -> VerifyReport:
        """Check every file of the index against its recorded checksum (see ``verify_index``)."""
        return verify_index(self.path)

    # -- properties ------------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        return self._state.manifest

    @property
    def codec(self) -> ResidualCodec:
        return self._state.codec

    @property
    def doclens(self) -> torch.Tensor:
        return self._state.doclens

    @property
    def doc_offsets(self) -> torch.Tensor:
        return self._state.doc_offsets

    @property
    def ivf_offsets(self) -> np.ndarray:
        return self._state.ivf_offsets

    @property
    def ivf_pids(self) -> np.ndarray:
        return self._state.ivf_pids

    @property
    def deleted(self) -> torch.Tensor:
        return self._state.deleted

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.manifest["settings"])

    @property
    def encoder(self) -> EncoderIdentity:
        """The encoder (checkpoint) that produced the embeddings, as recorded at build time; empty for
        indexes built before it was recorded. It also reads as the recorded JSON object
        (``index.encoder["checkpoint"]``)."""
        return EncoderIdentity.from_json(self.manifest.get("encoder"))

    @property
    def encoding(self) -> dict[str, Any]:
        """How the documents were encoded (e.g. ``max_length``), as recorded at build time; ``add`` reuses it."""
        return dict(self.manifest.get("encoding") or {})

    @property
    def generation(self) -> int:
        """Incremented by every add, upsert or delete; searchers use it to notice changes."""
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
        state = self._state
        if not 0 <= pid < state.doclens.shape[0]:
            raise IndexError(f"pid {pid} out of range: the index has {state.doclens.shape[0]} documents")
        segment = state.segments[int(np.searchsorted(state.segment_first_pids, pid, side="right")) - 1]
        return segment.store.get(pid - segment.first_pid)

    def pid_of(self, document_id: Any) -> int | None:
        """The pid of the live document stored with id ``document_id``, or None (ids are unique)."""
        return self._state.live_ids().get(_id_key(document_id))

    def vector_positions(self, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global positions of the vectors of ``pids`` and, for each, the index into ``pids`` it belongs to."""
        state = self._state
        pids = pids.long().cpu()
        return concat_ranges(state.doc_offsets[pids], state.doclens[pids])

    def inverted_lists(self, centroid_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pids in the inverted lists of ``centroid_ids``, and the index into ``centroid_ids`` of each."""
        state = self._state
        centroid_ids = centroid_ids.long().cpu().numpy()
        starts = torch.from_numpy(state.ivf_offsets[centroid_ids])
        positions, owners = concat_ranges(
            starts, torch.from_numpy(state.ivf_offsets[centroid_ids + 1]) - starts
        )
        pids = state.ivf_pids[positions.numpy()].astype(np.int64)
        if pids.size and (pids.min() < 0 or pids.max() >= state.doclens.shape[0]):
            raise damaged(self.path / state.manifest["files"]["ivf_pids"], "it holds pids out of range")
        return torch.from_numpy(pids), owners

    def candidate_pids(self, centroid_ids: torch.Tensor) -> torch.Tensor:
        """Sorted live pids having a vector in any of the inverted lists of ``centroid_ids``."""
        deleted = self.deleted
        pids = self.inverted_lists(centroid_ids)[0].unique()
        return pids[~deleted[pids]]

    def gather_centroid_ids(self, positions: torch.Tensor) -> torch.Tensor:
        """Centroid id (int64) of the vectors at global ``positions``."""
        return torch.from_numpy(self._gather("centroid_ids", positions).astype(np.int64))

    def document_centroids(self, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct centroid ids (int64) of each document's vectors, each once, and for each the
        index into ``pids`` it belongs to, grouped by document in the order of ``pids``.

        A document whose vectors share centroids lists them once (about 30% of the vectors of Debian
        documents do), so a MaxSim over centroid scores (PLAID's centroid interaction) reads fewer
        columns and gets the same maxima. Each segment computes its lists on first use (one sort of its
        centroid ids) and keeps them in memory: 4 bytes per distinct (document, centroid) pair.

        Example:
            >>> centroid_ids, owners = index.document_centroids(torch.tensor([3, 150]))
            >>> positions, vector_owners = index.vector_positions(torch.tensor([3, 150]))
            >>> every = index.gather_centroid_ids(positions)
            >>> sorted(set(every[vector_owners == 0].tolist())) == centroid_ids[owners == 0].tolist()
            True
        """
        offsets, centroid_ids = self._state.distinct_centroids
        pids = pids.long().cpu()
        starts = offsets[pids]
        positions, owners = concat_ranges(starts, offsets[pids + 1] - starts)
        return torch.from_numpy(centroid_ids[positions.numpy()].astype(np.int64)), owners

    def gather_codes(self, positions: torch.Tensor) -> torch.Tensor:
        """Residual codes (n, bytes_per_vector) uint8 of the vectors at global ``positions``."""
        return torch.from_numpy(self._gather("codes", positions))

    def gather_vectors(self, positions: torch.Tensor) -> torch.Tensor:
        """Stored float16 vectors (n, dim) at global ``positions``; needs an index that stores vectors.

        Raises:
            IndexInputError: the index keeps only compressed vectors.
        """
        if not self.stores_vectors:
            raise IndexInputError(
                f"the index at {self.path} keeps only compressed vectors (stores_vectors=False): build it "
                "with stores_vectors=True to read stored vectors"
            )
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
        deleted = self.deleted
        for first_pid in range(0, deleted.shape[0], docs_per_chunk):
            pids = torch.arange(first_pid, min(first_pid + docs_per_chunk, deleted.shape[0]))
            yield first_pid, pids[~deleted[pids]]

    # -- updating --------------------------------------------------------------------------------------
    def add(
        self,
        embeddings: EmbeddingsInput,
        doclens: torch.Tensor | Sequence[int] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        device: str | torch.device = "cpu",
    ) -> range:
        """Append documents, compressed with the existing centroids and codec; returns their new pids.

        Accepts the same inputs as ``IndexWriter.write``. Ids must be new: ``DuplicateIdError`` names an
        id that a live document already has, or that repeats in ``documents`` (see ``upsert``). The
        update is atomic (a crash leaves the index as it was) and starts from the newest generation,
        whatever this handle had loaded.

        Raises:
            DuplicateIdError: an id that is not new.
            IndexInputError: embeddings, doclens or documents that cannot be written (see ``iter_chunks``).
            IndexLockedError: another writer held the index's lock past the timeout.
        """
        return self._append(embeddings, doclens, documents, device, replace=False)

    def upsert(
        self,
        embeddings: EmbeddingsInput,
        doclens: torch.Tensor | Sequence[int] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        device: str | torch.device = "cpu",
    ) -> range:
        """Like ``add``, but a document whose id a live document has replaces it, in the same commit.

        The replaced documents are deleted (their pids never come back from search); returns the new pids.
        """
        return self._append(embeddings, doclens, documents, device, replace=True)

    def delete(self, pids: Sequence[int] | torch.Tensor) -> None:
        """Mark documents as deleted: they never come back from search. Atomic, like ``add``."""
        pids = torch.as_tensor(pids, dtype=torch.long).flatten()
        identity = self._state.manifest.get("index_id")
        with self._writing("delete"):
            if self._state.manifest.get("index_id") != identity:
                raise IndexFormatError(
                    f"the index at {self.path} was rebuilt since this handle loaded it, so its pids changed; "
                    "look the documents up again"
                )
            bad = pids[(pids < 0) | (pids >= self.num_documents)]
            if bad.numel():
                raise IndexError(
                    f"cannot delete pids {bad.tolist()}: the index has {self.num_documents} documents"
                )
            deleted = self.deleted.clone()
            deleted[pids] = True
            self._commit(dict(self.manifest), deleted=deleted)

    # -- internals -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self, operation: str) -> Iterator[None]:
        """Hold the write lock, repair leftovers, and move to the newest generation to write on top of it."""
        with write_lock(self.path, self.lock_timeout, operation):
            recover(self.path, self.lock_timeout)
            if committed_identity(self.path) != self._state.identity:
                self._state = load_snapshot(self.path, self.mmap, self._state, self.lock_timeout)
            self._checked_at = time.monotonic()
            self._remove_unreferenced_files()
            yield

    def _append(
        self,
        embeddings: EmbeddingsInput,
        doclens: torch.Tensor | Sequence[int] | None,
        documents: Sequence[Mapping[str, Any]] | None,
        device: str | torch.device,
        replace: bool,
    ) -> range:
        device = torch.device(device)
        with self._writing("upsert" if replace else "add"):
            replaced: list[int] = []
            generation = self.generation + 1
            folder_name = f"segments/{generation:06d}-{uuid.uuid4().hex[:6]}"
            try:
                written = write_segment(
                    self.path / folder_name,
                    self._checked_ids(iter_chunks(embeddings, doclens, documents), replace, replaced),
                    self.codec.to(device),
                    CentroidAssigner(self.codec.centroids.to(device), seed=self.settings["seed"]),
                    first_pid=self.num_documents,
                    device=device,
                    store_vectors=self.stores_vectors,
                )
            except BaseException:
                shutil.rmtree(self.path / folder_name, ignore_errors=True)
                raise
            if written.num_documents == 0:
                shutil.rmtree(self.path / folder_name)
                return range(self.num_documents, self.num_documents)
            fsync_path(self.path / folder_name)
            fsync_path(self.path / "segments")
            crash_point("segment-written")
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
            deleted = None
            if replaced:
                deleted = torch.cat([self.deleted, torch.zeros(written.num_documents, dtype=torch.bool)])
                deleted[replaced] = True
            self._commit(
                manifest,
                ivf=(offsets, pids),
                deleted=deleted,
                new_files=segment_files(folder_name, self.stores_vectors),
            )
            return range(self.num_documents - written.num_documents, self.num_documents)

    def _checked_ids(
        self, chunks: Iterable[DocumentChunk], replace: bool, replaced: list[int]
    ) -> Iterator[DocumentChunk]:
        """Pass ``chunks`` through, refusing ids that repeat or (unless ``replace``) that live documents have.

        With ``replace``, the pids of the live documents to replace are appended to ``replaced``.
        """
        live = self._state.live_ids()
        seen: set[Any] = set()
        for chunk in chunks:
            for fields in chunk.documents or ():
                document_id = fields.get("id") if isinstance(fields, Mapping) else None
                if document_id is None:
                    continue
                key = _id_key(document_id)
                if key in seen:
                    raise DuplicateIdError(
                        f"document id {document_id!r} appears twice in the added documents"
                    )
                seen.add(key)
                if key in live:
                    if not replace:
                        raise DuplicateIdError(
                            f"document id {document_id!r} is already in the index at {self.path} (pid {live[key]}); "
                            "use upsert to replace it, or delete it first"
                        )
                    replaced.append(live[key])
            yield chunk

    def _commit(
        self,
        manifest: dict[str, Any],
        ivf: tuple[np.ndarray, np.ndarray] | None = None,
        deleted: torch.Tensor | None = None,
        new_files: Sequence[str] = (),
    ) -> None:
        """Write the new generation's files, then its manifest (the commit point); clean up after."""
        generation = self.generation + 1
        files = dict(manifest["files"])
        written = list(new_files)
        if ivf is not None:
            files["ivf_offsets"], files["ivf_pids"] = (
                f"ivf_offsets.{generation}.npy",
                f"ivf_pids.{generation}.npy",
            )
            save_array(self.path / files["ivf_offsets"], ivf[0])
            save_array(self.path / files["ivf_pids"], ivf[1])
            written += [files["ivf_offsets"], files["ivf_pids"]]
        deleted = self.deleted if deleted is None else deleted
        files["deleted"] = f"deleted.{generation}.npy"
        save_array(self.path / files["deleted"], deleted.nonzero().flatten().numpy())
        written.append(files["deleted"])
        fsync_path(self.path)
        crash_point("files-written")
        referenced = set(files.values()).union(
            *(segment_files(s["folder"], self.stores_vectors) for s in manifest["segments"])
        )
        checksums = {k: v for k, v in manifest.get("checksums", {}).items() if k in referenced}
        manifest["checksums"] = {**checksums, **checksummed_files(self.path, written)}
        manifest["files"] = files
        manifest["generation"] = generation
        manifest["counts"] = {
            "num_documents": sum(s["num_documents"] for s in manifest["segments"]),
            "num_vectors": sum(s["num_vectors"] for s in manifest["segments"]),
            "num_deleted": int(deleted.sum()),
            "num_ivf_entries": int((ivf[1] if ivf is not None else self.ivf_pids).shape[0]),
        }
        write_manifest(self.path, manifest)
        crash_point("manifest-written")
        self._state = load_snapshot(self.path, self.mmap, self._state, self.lock_timeout)
        self._remove_unreferenced_files()

    def _gather(self, array_name: str, positions: torch.Tensor) -> np.ndarray:
        segments = self._state.segments
        positions_np = positions.cpu().numpy()
        if len(segments) == 1:
            gathered = np.ascontiguousarray(getattr(segments[0], array_name)[positions_np])
        else:
            first = getattr(segments[0], array_name)
            gathered = np.empty((positions_np.shape[0], *first.shape[1:]), dtype=first.dtype)
            owner = np.searchsorted(self._state.segment_first_vectors, positions_np, side="right") - 1
            for number, segment in enumerate(segments):
                rows = np.flatnonzero(owner == number)
                gathered[rows] = getattr(segment, array_name)[positions_np[rows] - segment.first_vector]
        if array_name == "centroid_ids" and gathered.size:
            self._check_centroid_ids(gathered, positions_np)
        return gathered

    def _check_centroid_ids(self, centroid_ids: np.ndarray, positions: np.ndarray) -> None:
        bad = (centroid_ids < 0) | (centroid_ids >= self.num_partitions)
        if bad.any():
            position = int(positions[np.flatnonzero(bad)[0]])
            segment = next(s for s in reversed(self._state.segments) if s.first_vector <= position)
            raise damaged(segment.folder / "centroid_ids.npy", "it holds centroid ids out of range")

    def _remove_unreferenced_files(self) -> None:
        """Delete leftovers of interrupted or superseded writes (never anything the manifest names).

        Runs under the write lock, so no other writer has files in progress. Folders other than
        ``segments`` are left alone: caches such as a BM25 index may live there. Readers that loaded a
        superseded generation keep reading it: its files are mapped or in memory.
        """
        referenced = {MANIFEST_NAME, *self.manifest["files"].values()}
        referenced_segments = {Path(s["folder"]).name for s in self.manifest["segments"]}
        for path in self.path.iterdir():
            if path.name == "segments" and path.is_dir():
                for segment in path.iterdir():
                    if segment.name not in referenced_segments:
                        shutil.rmtree(segment, ignore_errors=True)
            elif path.is_file() and path.name not in referenced:
                path.unlink()
