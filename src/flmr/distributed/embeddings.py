"""Encoded collections on disk as embedding parts: the contract between distributed encoding and indexing.

Layout of an embeddings folder::

    embeddings.json                  the run: checkpoint, number of documents, max_length, storage dtype
    parts/part-<first>-<last>-<n>/   one encoded batch, renamed into place once complete
        vectors.npy                  (n_vectors, dim) float16, the documents' vectors end to end
        doclens.npy                  (n,) int32, vectors per document
        positions.npy                (n,) int64, each document's position in the collection
        ids.json, documents.jsonl    document ids, and their stored fields (one JSON line each)
        encoder.json                 identity of the checkpoint that encoded them
        stats.json                   which worker encoded them, when it started and finished (Unix time)

A part folder exists only once every file in it is written (they are written into a temporary folder
that is then renamed), so a run that dies leaves finished parts and nothing half written; the next run
encodes only the positions no part holds. Parts are read in collection order whatever order they were
written in. Nothing here needs Ray.

Example (``my_embeddings``: 200 documents of 16-dim vectors, in two parts):
    >>> parts = EmbeddingParts("my_embeddings")
    >>> parts.check_complete()
    >>> chunk = next(parts.iter_chunks(0, 100))
    >>> chunk.num_documents, chunk.embeddings.shape[1], int(chunk.doclens.sum()) == chunk.embeddings.shape[0]
    (100, 16, True)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmr.encoding import CollectionError
from flmr.encoding.identity import EncoderIdentity
from flmr.index import DocumentChunk

from .errors import DistributedError

MANIFEST = "embeddings.json"
PARTS = "parts"
FORMAT = "flmr-embeddings"
FORMAT_VERSION = 1


def write_part(
    root: str | Path,
    positions: Sequence[int],
    vectors: Sequence[torch.Tensor],
    documents: Sequence[Mapping[str, Any]],
    encoder: EncoderIdentity,
    stats: Mapping[str, Any] | None = None,
) -> Path:
    """Write one encoded batch as a part folder, atomically; returns its path.

    ``stats`` (who encoded the part, when it started and finished) goes to ``stats.json``.

    The folder name is derived from the positions, so writing the same batch twice (a retried task)
    keeps the first copy.
    """
    if not (len(positions) == len(vectors) == len(documents)) or not positions:
        raise DistributedError(
            f"a part needs as many positions, vectors and documents, got {len(positions)}, {len(vectors)}, "
            f"{len(documents)}"
        )
    parts = Path(root) / PARTS
    final = parts / f"part-{min(positions):012d}-{max(positions):012d}-{len(positions):08d}"
    if final.exists():
        return final
    temporary = parts / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    temporary.mkdir(parents=True)
    try:
        np.save(temporary / "vectors.npy", torch.cat(list(vectors)).to(torch.float16).numpy())
        np.save(temporary / "doclens.npy", np.array([v.shape[0] for v in vectors], dtype=np.int32))
        np.save(temporary / "positions.npy", np.asarray(positions, dtype=np.int64))
        (temporary / "ids.json").write_text(json.dumps([str(d["id"]) for d in documents]))
        (temporary / "documents.jsonl").write_text("".join(json.dumps(dict(d)) + "\n" for d in documents))
        (temporary / "encoder.json").write_text(json.dumps(encoder.to_json()))
        (temporary / "stats.json").write_text(json.dumps(dict(stats or {})))
        os.rename(temporary, final)
    except OSError:
        if not final.exists():  # another writer finishing the same batch first is not an error
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return final


def prepare_folder(root: str | Path, settings: Mapping[str, Any]) -> None:
    """Create ``root`` for an encoding run, or check that the run it holds had the same ``settings``."""
    root = Path(root)
    manifest = root / MANIFEST
    wanted = {"format": FORMAT, "format_version": FORMAT_VERSION, **settings}
    if manifest.exists():
        previous = json.loads(manifest.read_text())
        if previous != json.loads(json.dumps(wanted)):
            raise CollectionError(
                f"{root} holds embeddings of another encoding run ({previous}); remove it or choose another folder"
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise CollectionError(f"{root} is not empty and holds no {MANIFEST}: choose another folder")
    temporary = root / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(wanted, indent=1))
    os.replace(temporary, manifest)


class EmbeddingParts:
    """The finished parts of an embeddings folder, readable in collection order.

    Args:
        root: the embeddings folder (see the module docstring).

    Example:
        >>> parts = EmbeddingParts("my_embeddings")
        >>> parts.num_documents, len(parts.finished_positions()), len(parts.parts)
        (200, 200, 2)
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise CollectionError(f"{self.root} is not an embeddings folder: it has no {MANIFEST}")
        self.settings = json.loads(manifest.read_text())
        folders = sorted((self.root / PARTS).glob("part-*")) if (self.root / PARTS).is_dir() else []
        self.parts = folders
        self._positions = [np.load(folder / "positions.npy") for folder in folders]
        self._doclens = [np.load(folder / "doclens.npy").astype(np.int64) for folder in folders]

    @property
    def num_documents(self) -> int:
        """Documents in the collection (encoded or not yet)."""
        return int(self.settings["num_documents"])

    @property
    def num_vectors(self) -> int:
        """Vectors of the encoded documents."""
        return int(sum(int(d.sum()) for d in self._doclens))

    def finished_positions(self) -> np.ndarray:
        """Sorted positions of the documents some part holds."""
        if not self._positions:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate(self._positions))

    def encoder(self) -> EncoderIdentity:
        """The identity of the checkpoint that encoded the parts; an error if parts disagree."""
        identities = [
            EncoderIdentity.from_json(json.loads((folder / "encoder.json").read_text()))
            for folder in self.parts
        ]
        if not identities:
            raise CollectionError(f"{self.root} holds no encoded part")
        for folder, identity in zip(self.parts[1:], identities[1:], strict=True):
            if not identities[0].same_as(identity):
                raise CollectionError(f"{folder} was encoded with another checkpoint than {self.parts[0]}")
        return identities[0]

    def stats(self) -> list[dict[str, Any]]:
        """Per part: its number of documents and vectors, and what ``stats.json`` recorded.

        Example:
            >>> [(s["documents"], s["worker"]) for s in EmbeddingParts("my_embeddings").stats()]
            [(100, '127.0.0.1:...'), (100, '127.0.0.1:...')]
        """
        return [
            {
                "documents": int(doclens.shape[0]),
                "vectors": int(doclens.sum()),
                **json.loads((folder / "stats.json").read_text()),
            }
            for folder, doclens in zip(self.parts, self._doclens, strict=True)
        ]

    def check_complete(self) -> None:
        """Raise ``CollectionError`` unless every position is encoded and document ids are unique."""
        missing = self.num_documents - len(self.finished_positions())
        if missing:
            raise CollectionError(
                f"{self.root}: {missing} of {self.num_documents} documents are not encoded yet"
            )
        owner, _ = self._locate()
        seen: dict[str, int] = {}
        for part, folder in enumerate(self.parts):
            positions = self._positions[part]
            ids = json.loads((folder / "ids.json").read_text())
            for r in np.flatnonzero(owner[positions] == part):  # a retried batch's duplicate rows skip
                identifier, position = ids[r], int(positions[r])
                if identifier in seen:
                    raise CollectionError(
                        f"documents {seen[identifier]} and {position} share the id {identifier!r}; ids must be unique"
                    )
                seen[identifier] = position

    def sample(self, size: int, seed: int = 0) -> torch.Tensor:
        """``size`` vectors (float32) drawn uniformly without replacement from every part."""
        counts = np.array([int(d.sum()) for d in self._doclens], dtype=np.int64)
        total = int(counts.sum())
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(total, size=min(size, total), replace=False))
        starts = np.concatenate([[0], np.cumsum(counts)])
        vectors = []
        for number, folder in enumerate(self.parts):
            rows = picked[(picked >= starts[number]) & (picked < starts[number + 1])] - starts[number]
            if rows.size:
                vectors.append(
                    torch.from_numpy(np.load(folder / "vectors.npy", mmap_mode="r")[rows].astype(np.float32))
                )
        sample = torch.cat(vectors)
        # shuffle so that the codec's held-out rows are not all from the first parts
        return sample[torch.randperm(sample.shape[0], generator=torch.Generator().manual_seed(seed))]

    def iter_chunks(self, start: int, stop: int, docs_per_chunk: int = 4096) -> Iterator[DocumentChunk]:
        """Documents at positions ``start..stop-1`` in collection order, as index-writer chunks."""
        owner, row = self._locate()
        if (owner[start:stop] < 0).any():
            raise CollectionError(f"{self.root}: documents {start}..{stop - 1} are not all encoded")
        for first in range(start, stop, docs_per_chunk):
            last = min(first + docs_per_chunk, stop)
            vectors, doclens, documents = [], [], []
            for part, rows in _runs(owner[first:last], row[first:last]):
                offsets = np.concatenate([[0], np.cumsum(self._doclens[part])])
                data = np.load(self.parts[part] / "vectors.npy", mmap_mode="r")
                vectors.append(torch.from_numpy(np.array(data[offsets[rows[0]] : offsets[rows[-1] + 1]])))
                doclens.append(torch.from_numpy(self._doclens[part][rows[0] : rows[-1] + 1]))
                stored = self._documents(part)
                documents += [stored[r] for r in range(rows[0], rows[-1] + 1)]
            yield DocumentChunk(torch.cat(vectors), torch.cat(doclens), documents)

    def _locate(self) -> tuple[np.ndarray, np.ndarray]:
        """For each position: the part holding it (-1 if none) and its row there (the first part wins)."""
        owner = np.full(self.num_documents, -1, dtype=np.int64)
        row = np.zeros(self.num_documents, dtype=np.int64)
        for part in range(len(self.parts) - 1, -1, -1):
            positions = self._positions[part]
            owner[positions] = part
            row[positions] = np.arange(positions.shape[0])
        return owner, row

    def _documents(self, part: int) -> list[dict[str, Any]]:
        return _read_jsonl(self.parts[part] / "documents.jsonl")


def _runs(owner: np.ndarray, row: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Split positions into runs held by one part at consecutive rows: each run is one slice."""
    breaks = np.flatnonzero((np.diff(owner) != 0) | (np.diff(row) != 1)) + 1
    for run_owner, run_rows in zip(np.split(owner, breaks), np.split(row, breaks), strict=True):
        yield int(run_owner[0]), run_rows


@lru_cache(maxsize=8)
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
