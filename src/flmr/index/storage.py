"""On-disk format: .npy arrays (memory-mappable), a JSONL document store and ``manifest.json``.

The manifest is the commit point. A fresh index is written into a temporary sibling folder and renamed
into place; an update writes new files next to the old ones and then atomically replaces the manifest,
so a reader only ever sees files that a complete manifest names.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flmr.index.errors import IndexExistsError, IndexFormatError

FORMAT_NAME = "flmr-plaid-index"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DOCUMENT_FIELDS = ("id", "text", "image_path", "metadata", "vector_layout")
_NPY_HEADER_BYTES = 256  # room for any shape; a multiple of 64 keeps the data aligned


@dataclass(frozen=True)
class StoredDocument:
    """Fields stored for one document; absent fields are ``None``.

    ``vector_layout`` (written by the encoder) lists the blocks of the document's vectors in order, e.g.
    ``[{"kind": "image", "vectors": 32, "source": "a.jpg"}, {"kind": "text", "vectors": 40, "max_length": 512}]``,
    so explanations can map a vector back to an image or a token.
    """

    id: str | None = None
    text: str | None = None
    image_path: str | None = None
    metadata: dict[str, Any] | None = None
    vector_layout: list[dict[str, Any]] | None = None

    @property
    def image_paths(self) -> list[str]:
        """Every image file of the document, in order: the ``source`` of each image block of its
        ``vector_layout``, or ``image_path`` alone for documents stored without one.

        Example:
            >>> StoredDocument(image_path="a.jpg", vector_layout=[
            ...     {"kind": "image", "vectors": 4, "source": "a.jpg"},
            ...     {"kind": "image", "vectors": 4, "source": "b.jpg"}]).image_paths
            ['a.jpg', 'b.jpg']
        """
        sources = [
            block["source"]
            for block in self.vector_layout or []
            if block.get("kind") == "image" and block.get("source")
        ]
        return sources or ([self.image_path] if self.image_path else [])

    def to_dict(self) -> dict[str, Any]:
        """The stored fields, and ``image_paths``."""
        return {**asdict(self), "image_paths": self.image_paths}


def fsync_path(path: Path) -> None:
    """Flush a file or a folder entry to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as .npy and fsync it."""
    with open(path, "wb") as file:
        np.save(file, np.ascontiguousarray(array))
        file.flush()
        os.fsync(file.fileno())


def load_array(path: Path, mmap: bool = True) -> np.ndarray:
    """Load a .npy file, memory-mapped read-only unless ``mmap`` is False."""
    if not path.is_file():
        raise IndexFormatError(f"index file missing: {path}")
    return np.load(path, mmap_mode="r" if mmap else None)


class GrowingArrayFile:
    """A .npy file written row block by row block when the final row count is unknown.

    The header is reserved up front and written on ``close``, once the shape is known.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "codes.npy"
        >>> with GrowingArrayFile(path, np.uint8, (4,)) as file:
        ...     file.append(np.ones((3, 4), np.uint8))
        >>> np.load(path, mmap_mode="r").shape
        (3, 4)
    """

    def __init__(self, path: Path, dtype: np.dtype | type, row_shape: tuple[int, ...]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = row_shape
        self.num_rows = 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(b"\0" * _NPY_HEADER_BYTES)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self._file.write(rows.tobytes())
        self.num_rows += rows.shape[0]

    def close(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.num_rows, *self.row_shape),
        }
        text = repr(header).encode("latin1")
        prefix = np.lib.format.magic(1, 0)
        padding = _NPY_HEADER_BYTES - len(prefix) - 2 - len(text) - 1
        self._file.seek(0)
        self._file.write(
            prefix + (len(text) + padding + 1).to_bytes(2, "little") + text + b" " * padding + b"\n"
        )
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> GrowingArrayFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class DocumentStoreWriter:
    """Appends stored fields as JSON lines plus the byte offset of each line, for random access."""

    def __init__(self, folder: Path) -> None:
        self._file = open(folder / "documents.jsonl", "wb")  # noqa: SIM115 - closed in close()
        self._offsets = GrowingArrayFile(folder / "document_offsets.npy", np.int64, ())
        self._position = 0

    def append(self, first_pid: int, documents: list[Mapping[str, Any]] | None, count: int) -> None:
        lines = []
        for row in range(count):
            fields = documents[row] if documents is not None else {}
            lines.append(_encode_document(first_pid + row, fields))
        offsets = self._position + np.cumsum([0] + [len(line) for line in lines[:-1]], dtype=np.int64)
        self._offsets.append(offsets[:count])
        self._file.write(b"".join(lines))
        self._position += sum(len(line) for line in lines)

    def close(self) -> None:
        self._offsets.append(np.array([self._position], dtype=np.int64))  # end of the last line
        self._offsets.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def _encode_document(pid: int, fields: Mapping[str, Any]) -> bytes:
    unknown = set(fields) - set(DOCUMENT_FIELDS)
    if unknown:
        raise ValueError(
            f"document {pid}: unknown stored fields {sorted(unknown)}, allowed: {DOCUMENT_FIELDS}"
        )
    try:
        return (json.dumps({key: fields[key] for key in DOCUMENT_FIELDS if key in fields}) + "\n").encode()
    except TypeError as error:
        raise ValueError(f"document {pid}: stored fields are not JSON-serialisable ({error})") from error


class DocumentStoreReader:
    """Reads one document's stored fields without loading the whole store."""

    def __init__(self, folder: Path) -> None:
        self._path = folder / "documents.jsonl"
        self._offsets = load_array(folder / "document_offsets.npy")
        if not self._path.is_file():
            raise IndexFormatError(f"index file missing: {self._path}")

    def get(self, row: int) -> StoredDocument:
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        with open(self._path, "rb") as file:
            file.seek(start)
            return StoredDocument(**json.loads(file.read(end - start)))


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Atomically replace ``folder/manifest.json``."""
    temporary = folder / f".{MANIFEST_NAME}.{uuid.uuid4().hex}"
    with open(temporary, "w") as file:
        json.dump(manifest, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, folder / MANIFEST_NAME)
    fsync_path(folder)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the index at ``folder``; ``IndexFormatError`` if it is missing or invalid."""
    if not folder.is_dir():
        raise IndexFormatError(f"no index at {folder}: folder does not exist")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise IndexFormatError(f"{folder} is not a flmr index: it has no {MANIFEST_NAME} (unfinished write?)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path} is not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: format version {manifest.get('format_version')!r}, this flmr reads version {FORMAT_VERSION}"
        )
    return manifest


def new_build_folder(
    destination: Path, overwrite: bool, index_markers: tuple[str, ...] = (MANIFEST_NAME,)
) -> Path:
    """Check ``destination`` may be written and create the temporary sibling folder to build in.

    A non-empty ``destination`` is replaced only when it holds one of ``index_markers`` (the manifest
    files that make a folder an index), so no other folder is ever overwritten.
    """
    if destination.exists():
        if not overwrite:
            raise IndexExistsError(
                f"an index already exists at {destination}; pass overwrite=True to replace it"
            )
        is_index = any((destination / marker).is_file() for marker in index_markers)
        if not is_index and any(destination.iterdir()):
            raise IndexExistsError(
                f"refusing to overwrite {destination}: it is a non-empty folder but not an index"
            )
    destination.parent.mkdir(parents=True, exist_ok=True)
    folder = destination.parent / f".{destination.name}.building-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def publish_build_folder(folder: Path, destination: Path) -> None:
    """Move a finished build folder to ``destination``, replacing an older index there."""
    for path in folder.rglob("*"):
        if path.is_dir():
            fsync_path(path)
    fsync_path(folder)
    retired = None
    if destination.exists():
        retired = destination.parent / f".{destination.name}.retired-{uuid.uuid4().hex[:8]}"
        os.rename(destination, retired)
    os.rename(folder, destination)
    fsync_path(destination.parent)
    if retired is not None:
        shutil.rmtree(retired)
