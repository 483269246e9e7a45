"""On-disk format: .npy arrays (memory-mappable), a JSONL document store and ``manifest.json``.

The manifest is the commit point. A fresh index is written into a temporary sibling folder and renamed
into place; an update writes new files next to the old ones and then atomically replaces the manifest,
so a reader only ever sees files that a complete manifest names. The manifest records a checksum of
every file it names (BLAKE2b) and of itself, so damage is found and named (see ``verify_index``).

Readers load a *snapshot*: every array is memory-mapped or read when the index is opened, and the
document stores are memory-mapped too, so removing a superseded file later never disturbs a reader that
loaded it. Writers change the folder only under the write lock (see ``flmr.index.locking``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import signal
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from flmr.index.errors import (
    DAMAGED_HINT,
    IndexExistsError,
    IndexFormatError,
    IndexInputError,
    IndexLockedError,
)
from flmr.index.locking import DEFAULT_LOCK_TIMEOUT, BuildLock, write_lock

FORMAT_NAME = "flmr-plaid-index"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_NPY_HEADER_BYTES = 256  # room for any shape; a multiple of 64 keeps the data aligned
CRASH_ENV = "FLMR_TEST_CRASH_AT"  # test hook: the process kills itself at the named commit phase
_CHECKSUM_BLOCK = 1 << 20


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


# The stored-document schema: every writer of an index (Retriever, Ray encoding) stores these fields.
DOCUMENT_FIELDS = tuple(field.name for field in fields(StoredDocument))


def stored_fields(document: Any, vector_layout: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What an index stores for ``document``: its ``id``, ``text``, ``image_path`` and ``metadata`` (any
    object with those attributes, such as [`flmr.encoding.Document`]) and its ``vector_layout`` (see
    [`flmr.encoding.layout.vector_layout`]).

    Example:
        >>> from types import SimpleNamespace
        >>> stored_fields(SimpleNamespace(id="d1", text="Paris", image_path=None, metadata={}))
        {'id': 'd1', 'text': 'Paris', 'image_path': None, 'metadata': {}, 'vector_layout': None}
    """
    return {
        **{name: getattr(document, name) for name in DOCUMENT_FIELDS if name != "vector_layout"},
        "vector_layout": vector_layout,
    }


def crash_point(phase: str) -> None:
    """Kill this process with SIGKILL when ``$FLMR_TEST_CRASH_AT`` names ``phase`` (crash tests only)."""
    if os.environ.get(CRASH_ENV) == phase:
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_path(path: Path) -> None:
    """Flush a file or a folder entry to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_checksum(path: Path) -> str:
    """BLAKE2b (128-bit) hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        while block := file.read(_CHECKSUM_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as .npy and fsync it."""
    with open(path, "wb") as file:
        np.save(file, np.ascontiguousarray(array))
        file.flush()
        os.fsync(file.fileno())


def damaged(path: Path, problem: str) -> IndexFormatError:
    """The error for a damaged index file: names it, the problem, and what to do."""
    return IndexFormatError(f"index file {path} is damaged: {problem}; {DAMAGED_HINT}")


def load_array(
    path: Path,
    mmap: bool = True,
    shape: tuple[int | None, ...] | None = None,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Load a .npy file, memory-mapped read-only unless ``mmap`` is False.

    The header is checked against the file size and, when given, ``shape`` (``None`` entries match any
    size) and ``dtype``. Raises ``IndexFormatError`` naming the file when it is missing or damaged.
    """
    if not path.is_file():
        raise IndexFormatError(f"index file missing: {path}; {DAMAGED_HINT}")
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found_shape, fortran_order, found_dtype = read_header(file)
            offset = file.tell()
    except Exception as error:  # numpy raises ValueError, SyntaxError, EOFError... on a bad header
        raise damaged(path, f"unreadable .npy header ({error})") from None
    if fortran_order or found_dtype.hasobject:
        raise damaged(path, "not a plain C-ordered numeric array")
    if dtype is not None and found_dtype != np.dtype(dtype):
        raise damaged(path, f"dtype {found_dtype}, expected {np.dtype(dtype)}")
    if shape is not None and (
        len(found_shape) != len(shape)
        or any(e is not None and e != f for e, f in zip(shape, found_shape, strict=True))
    ):
        raise damaged(path, f"shape {found_shape}, expected {tuple('*' if e is None else e for e in shape)}")
    count = int(np.prod(found_shape, dtype=np.int64))
    expected_size = offset + count * found_dtype.itemsize
    size = path.stat().st_size
    if size != expected_size:
        raise damaged(path, f"{size} bytes, its header describes {expected_size} (truncated or extended)")
    if count == 0:
        return np.empty(found_shape, found_dtype)
    if mmap:
        return np.memmap(path, found_dtype, "r", offset, found_shape)
    with open(path, "rb") as file:
        file.seek(offset)
        return np.fromfile(file, found_dtype, count).reshape(found_shape)


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
        """Write ``rows`` (n, *row_shape) after the rows so far.

        Raises:
            IndexInputError: the rows have another shape.
        """
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise IndexInputError(
                f"{self.path.name}: rows of shape {rows.shape[1:]}, expected {self.row_shape}"
            )
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
        """Write the stored fields of documents ``first_pid`` .. ``first_pid + count - 1`` (empty without
        ``documents``).

        Raises:
            IndexInputError: a document with an unknown field or fields that are not JSON-serialisable.
        """
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
        raise IndexInputError(
            f"document {pid}: unknown stored fields {sorted(unknown)}, allowed: {DOCUMENT_FIELDS}"
        )
    try:
        return (json.dumps({key: fields[key] for key in DOCUMENT_FIELDS if key in fields}) + "\n").encode()
    except TypeError as error:
        raise IndexInputError(f"document {pid}: stored fields are not JSON-serialisable ({error})") from error


class DocumentStoreReader:
    """Reads one document's stored fields without loading the whole store (memory-mapped).

    ``offsets`` is the store's ``document_offsets.npy``: the byte offset of every line and the end.
    """

    def __init__(self, folder: Path, offsets: np.ndarray) -> None:
        self.path = folder / "documents.jsonl"
        if not self.path.is_file():
            raise IndexFormatError(f"index file missing: {self.path}; {DAMAGED_HINT}")
        self._offsets = offsets
        size = self.path.stat().st_size
        if int(offsets[-1]) != size:
            raise damaged(self.path, f"{size} bytes, document_offsets.npy ends at {int(offsets[-1])}")
        if size == 0:
            self._bytes: bytes | mmap.mmap = b""
        else:
            with open(self.path, "rb") as file:
                self._bytes = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)

    def raw(self, row: int) -> dict[str, Any]:
        """The stored fields of ``row`` as a dict; ``IndexFormatError`` naming the file if unreadable."""
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        try:
            fields = json.loads(self._bytes[start:end])
        except (ValueError, UnicodeDecodeError) as error:
            raise damaged(self.path, f"line {row + 1} is not valid JSON ({error})") from None
        if not isinstance(fields, dict) or set(fields) - set(DOCUMENT_FIELDS):
            raise damaged(self.path, f"line {row + 1} is not a stored document")
        return fields

    def get(self, row: int) -> StoredDocument:
        return StoredDocument(**self.raw(row))

    def ids(self) -> list[Any]:
        """The stored id of every row (``None`` where there is none), read in one pass."""
        return [self.raw(row).get("id") for row in range(len(self._offsets) - 1)]


# -- manifest ----------------------------------------------------------------------------------------
def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """Checksum of a manifest's contents (without its own ``manifest_checksum`` entry)."""
    body = {key: value for key, value in manifest.items() if key != "manifest_checksum"}
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


def write_json_atomically(path: Path, content: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``content`` as JSON at once: written and fsynced beside it, then renamed."""
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    with open(temporary, "w") as file:
        json.dump(content, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    fsync_path(path.parent)


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Atomically replace ``folder/manifest.json`` (adding the manifest's own checksum)."""
    write_json_atomically(
        folder / MANIFEST_NAME, {**manifest, "manifest_checksum": manifest_checksum(manifest)}
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the index at ``folder``; ``IndexFormatError`` if it is missing or invalid."""
    if not folder.is_dir():
        raise IndexFormatError(f"no index at {folder}: folder does not exist")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise IndexFormatError(f"{folder} is not a flmr index: it has no {MANIFEST_NAME} (unfinished write?)")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise damaged(path, f"not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path} is not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: format version {manifest.get('format_version')!r}, this flmr reads version {FORMAT_VERSION}"
        )
    recorded = manifest.get("manifest_checksum")
    if recorded is not None and recorded != manifest_checksum(manifest):
        raise damaged(path, "its contents do not match its checksum")
    _check_manifest(folder, path, manifest)
    return manifest


def _check_manifest(folder: Path, path: Path, manifest: dict[str, Any]) -> None:
    """Check the manifest's structure and that every path it names stays inside ``folder``."""

    def fail(problem: str) -> IndexFormatError:
        return damaged(path, problem)

    settings, files, segments = manifest.get("settings"), manifest.get("files"), manifest.get("segments")
    if not isinstance(settings, dict) or not all(
        isinstance(settings.get(key), int) and not isinstance(settings.get(key), bool)
        for key in ("nbits", "dim", "num_partitions", "seed")
    ):
        raise fail("'settings' must hold integer nbits, dim, num_partitions and seed")
    if not isinstance(manifest.get("generation"), int) or manifest["generation"] < 0:
        raise fail("'generation' must be a non-negative integer")
    if not isinstance(manifest.get("encoder", {}), dict):
        raise fail("'encoder' must be an object")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise fail("'files' must map names to relative paths")
    missing = {"ivf_offsets", "ivf_pids", "deleted"} - set(files)
    if missing:
        raise fail(f"'files' lacks {sorted(missing)}")
    if not isinstance(segments, list) or not segments:
        raise fail("'segments' must be a non-empty list")
    for entry in segments:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("folder"), str)
            and all(
                isinstance(entry.get(key), int) and entry[key] >= 0
                for key in ("num_documents", "num_vectors")
            )
        ):
            raise fail(f"segment entry {entry!r} needs a folder and non-negative counts")
    for relative in [*files.values(), *(entry["folder"] for entry in segments)]:
        inside_path(folder, relative, path)
    checksums = manifest.get("checksums", {})
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise fail("'checksums' must map relative paths to hex digests")


def inside_path(folder: Path, relative: str, manifest_path: Path) -> Path:
    """``folder / relative``, refusing absolute paths and any that resolve outside ``folder``."""
    candidate = Path(relative)
    root = folder.resolve()
    if (
        not relative
        or candidate.is_absolute()
        or ".." in candidate.parts
        or not ((root / candidate).resolve().is_relative_to(root))
    ):
        raise damaged(manifest_path, f"it names {relative!r}, which is not a path inside the index folder")
    return folder / candidate


def manifest_token(folder: Path) -> tuple[int, ...] | None:
    """A cheap identity of the current manifest file (changes on every commit); None if there is none."""
    try:
        info = os.stat(folder / MANIFEST_NAME)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size


def checksummed_files(folder: Path, relatives: list[str]) -> dict[str, str]:
    """``{relative path: checksum}`` of files inside ``folder``."""
    return {relative: file_checksum(folder / relative) for relative in relatives}


# -- builds: temporary sibling folders, publishing, recovery -------------------------------------------
_BUILD_LOCKS: dict[Path, BuildLock] = {}


def new_build_folder(
    destination: Path, overwrite: bool, index_markers: tuple[str, ...] = (MANIFEST_NAME,)
) -> Path:
    """Check ``destination`` may be written and create the temporary sibling folder to build in.

    A non-empty ``destination`` is replaced only when it holds one of ``index_markers`` (the manifest
    files that make a folder an index), so no other folder is ever overwritten. The folder is locked
    (see ``flmr.index.locking``) until ``publish_build_folder`` or ``discard_build_folder``.
    """
    _check_destination(destination, overwrite, index_markers)
    destination.parent.mkdir(parents=True, exist_ok=True)
    if _siblings(destination, "building") or _siblings(destination, "retired"):
        with contextlib.suppress(IndexLockedError):  # best effort: a busy index is cleaned when published
            recover(destination, lock_timeout=0)
    folder = destination.parent / f".{destination.name}.building-{uuid.uuid4().hex[:8]}"
    lock = BuildLock(folder)
    lock.acquire()  # a fresh name: nobody else holds it
    folder.mkdir()
    _BUILD_LOCKS[folder] = lock
    return folder


def _check_destination(destination: Path, overwrite: bool, index_markers: tuple[str, ...]) -> None:
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


def discard_build_folder(folder: Path) -> None:
    """Remove a build folder (if still there) and release its lock."""
    shutil.rmtree(folder, ignore_errors=True)
    lock = _BUILD_LOCKS.pop(folder, None)
    if lock is not None:
        lock.release()


def publish_build_folder(
    folder: Path,
    destination: Path,
    overwrite: bool = True,
    index_markers: tuple[str, ...] = (MANIFEST_NAME,),
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> None:
    """Move a finished build folder to ``destination``, replacing an older index there.

    Runs under ``destination``'s write lock, after recovering what an earlier crash left. If the
    process dies between the two renames, the next open or write restores the older index.
    """
    for path in folder.rglob("*"):
        if path.is_dir():
            fsync_path(path)
    fsync_path(folder)
    crash_point("build-written")
    with write_lock(destination, lock_timeout, "publish"):
        recover(destination)
        _check_destination(destination, overwrite, index_markers)
        retired = None
        if destination.exists():
            retired = destination.parent / f".{destination.name}.retired-{uuid.uuid4().hex[:8]}"
            os.rename(destination, retired)
            crash_point("overwrite-retired")
        os.rename(folder, destination)
        fsync_path(destination.parent)
        crash_point("overwrite-published")
        if retired is not None:
            shutil.rmtree(retired)
    if folder in _BUILD_LOCKS:
        _BUILD_LOCKS.pop(folder).release()


def _siblings(destination: Path, kind: str) -> list[Path]:
    pattern = f".{destination.name}.{kind}-*"
    return sorted(destination.parent.glob(pattern)) if destination.parent.is_dir() else []


def needs_recovery(destination: Path) -> bool:
    """Whether an interrupted overwrite left ``destination`` without its index."""
    return not (destination / MANIFEST_NAME).is_file() and any(
        path.is_dir() for path in _siblings(destination, "retired")
    )


def recover(destination: Path, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
    """Repair what killed writers left next to ``destination`` (under its write lock).

    An overwrite killed between its two renames left the older index in ``.NAME.retired-*`` and no
    ``NAME``: it is renamed back. Retired folders of finished overwrites are removed, and so are build
    folders (``.NAME.building-*``) whose builder is dead (its build lock can be taken); a running
    build's folder is never touched.
    """
    with write_lock(destination, lock_timeout, "recover"):
        retired = [path for path in _siblings(destination, "retired") if path.is_dir()]
        if retired and not destination.exists():
            with_manifest = [path for path in retired if (path / MANIFEST_NAME).is_file()]
            if with_manifest:
                os.rename(with_manifest[-1], destination)
                fsync_path(destination.parent)
                retired.remove(with_manifest[-1])
        for path in retired:
            shutil.rmtree(path, ignore_errors=True)
        for path in _siblings(destination, "building"):
            if path.suffix == ".lock" or path in _BUILD_LOCKS:
                continue
            lock = BuildLock(path)
            if lock.acquire():  # its builder is gone
                shutil.rmtree(path, ignore_errors=True)
                lock.release()
        for path in _siblings(destination, "building"):  # locks left without a folder
            if path.suffix == ".lock" and not path.with_suffix("").exists():
                lock = BuildLock(path.with_suffix(""))
                if lock.acquire():
                    lock.release()


@contextlib.contextmanager
def build_folder(destination: Path, overwrite: bool) -> Iterator[Path]:
    """A locked build folder for ``destination``, removed on failure (see ``new_build_folder``)."""
    folder = new_build_folder(destination, overwrite)
    try:
        yield folder
    finally:
        discard_build_folder(folder)
