"""Sharded indexes: N ordinary index folders that cover consecutive runs of one collection, as one index.

On disk a sharded index is a folder holding ``shards.json`` and the shard index folders it names::

    shards.json        {"format": "flmr-sharded-index", "format_version": 1, "num_documents": N,
                        "shards": [{"folder": "shard-00000", "first_pid": 0, "num_documents": n0,
                                    "index_id": "..."}, ...], ...extra (encoder, nbits...)}
    shard-00000/       an ordinary index (manifest.json, segments/...)
    shard-00001/

Shard ``i`` holds global pids ``offset_i .. offset_i + num_documents_i - 1``: global pid = shard offset +
local pid. Every shard is compressed with one shared codec (same centroids and quantiser), so a
document's decompressed vectors, and hence its MaxSim score, are the same in its shard as in a single
index over the whole collection; ``ShardedIndex`` refuses shards with different codecs.

Pids never change, so documents are only ever added to the LAST shard: growing any other shard would
move the pids of every later shard. ``shards.json`` records each shard's size and build id
(``index_id``); a reader refuses a sharded index whose shards were rebuilt, swapped, or grew other than
at the end. The last shard may hold more documents than recorded (an add committed to the shard whose
``shards.json`` update did not happen yet); the next ``ShardedIndex.add`` records them.

Example (``my_sharded_index``: 200 documents in 2 shards of 100):
    >>> sharded = ShardedIndex.load("my_sharded_index")
    >>> shard, local = sharded.locate(123)
    >>> (shard, local), sharded.document(123).id == sharded.shards[shard].document(local).id
    ((1, 23), True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from flmr.encoding.identity import EncoderIdentity
from flmr.index.codec import ResidualCodec
from flmr.index.errors import DuplicateIdError, IndexFormatError, IndexInputError
from flmr.index.index import DEFAULT_AUTO_REFRESH, Index
from flmr.index.inputs import DocumentChunk, EmbeddingsInput, iter_chunks
from flmr.index.locking import DEFAULT_LOCK_TIMEOUT, write_lock
from flmr.index.storage import (
    MANIFEST_NAME,
    StoredDocument,
    discard_build_folder,
    new_build_folder,
    publish_build_folder,
    write_json_atomically,
)

SHARDS_MANIFEST = "shards.json"
SHARDS_FORMAT = "flmr-sharded-index"
SHARDS_FORMAT_VERSION = 1
INDEX_MARKERS = (MANIFEST_NAME, SHARDS_MANIFEST)  # files that make a folder an index (single or sharded)

ShardSource = str | os.PathLike | Sequence[str | os.PathLike | Index]


def shard_offsets(num_documents: Sequence[int]) -> list[int]:
    """The first global pid of each shard, from the shards' document counts.

    Example:
        >>> shard_offsets([3, 5, 2])
        [0, 3, 8]
    """
    return [0, *np.cumsum(num_documents)[:-1].tolist()] if len(num_documents) else []


def shard_folder_names(num_shards: int) -> list[str]:
    """The folder names ``build`` functions give shards: ``shard-00000``...; one shard is ``index``.

    Example:
        >>> shard_folder_names(2), shard_folder_names(1)
        (['shard-00000', 'shard-00001'], ['index'])
    """
    if num_shards < 1:
        raise IndexInputError(f"a sharded index needs at least one shard, got num_shards={num_shards}")
    return [f"shard-{number:05d}" for number in range(num_shards)] if num_shards > 1 else ["index"]


def is_sharded_index(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a ``shards.json`` (a sharded index) rather than one index."""
    return (Path(folder) / SHARDS_MANIFEST).is_file()


def write_shards_manifest(folder: str | os.PathLike, shard_folders: Sequence[str], **extra: Any) -> Path:
    """Write ``folder/shards.json`` naming the shard index folders (relative to ``folder``), in pid order.

    The shards must already be complete indexes sharing one codec; their document counts and build ids
    are recorded so that a reader can check nothing was swapped. ``extra`` (encoder, codec settings...)
    is stored alongside. The file is replaced atomically. Raises ``IndexFormatError`` when a shard is
    not an index or the codecs differ.

    Example:
        >>> import shutil
        >>> for name in ["shard-00000", "shard-00001"]:  # two complete indexes with one codec
        ...     _ = shutil.copytree(Path("my_sharded_index") / name, Path("regrouped") / name)
        >>> write_shards_manifest("regrouped", ["shard-00000", "shard-00001"])
        PosixPath('regrouped/shards.json')
        >>> ShardedIndex.load("regrouped").num_documents
        200
    """
    folder = Path(folder)
    shards = [Index.load(folder / name, auto_refresh=None) for name in shard_folders]
    check_shared_codec(shards)
    return _write_manifest(folder, list(shard_folders), shards, extra)


def read_shards_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed and checked ``shards.json`` of a sharded index.

    Raises ``IndexFormatError`` naming the file when it is missing, not JSON, of another format or
    version, or when its shard entries are malformed (a folder outside ``folder``, a negative count,
    ``first_pid`` values that do not follow the counts, a total that is not their sum).
    """
    path = Path(folder) / SHARDS_MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"{folder} is not a sharded index: it has no {SHARDS_MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SHARDS_FORMAT:
        raise IndexFormatError(f"{path} is not a {SHARDS_FORMAT} manifest")
    if manifest.get("format_version") != SHARDS_FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: format version {manifest.get('format_version')!r}, this flmr reads version "
            f"{SHARDS_FORMAT_VERSION}"
        )
    _check_entries(path, manifest)
    return manifest


def _check_entries(path: Path, manifest: dict[str, Any]) -> None:
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise IndexFormatError(f"{path}: 'shards' must be a non-empty list of shard entries")
    first_pid = 0
    for number, entry in enumerate(shards):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("folder"), str)
            and all(_is_count(entry.get(key)) for key in ("first_pid", "num_documents"))
        ):
            raise IndexFormatError(f"{path}: shard entry {number} {entry!r} needs a folder and counts")
        relative = PurePosixPath(entry["folder"])
        if not entry["folder"] or relative.is_absolute() or ".." in relative.parts:
            raise IndexFormatError(
                f"{path}: shard {number} names {entry['folder']!r}, which is not a folder inside {path.parent}"
            )
        if entry["first_pid"] != first_pid:
            raise IndexFormatError(
                f"{path}: shard {number}'s first_pid {entry['first_pid']} disagrees with the sizes of the "
                f"shards before it ({first_pid} documents); rewrite it with write_shards_manifest"
            )
        first_pid += entry["num_documents"]
    if manifest.get("num_documents") != first_pid:
        raise IndexFormatError(
            f"{path}: 'num_documents' is {manifest.get('num_documents')!r}, its shards hold {first_pid}"
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _write_manifest(
    folder: Path, names: list[str], shards: Sequence[Index], extra: Mapping[str, Any]
) -> Path:
    entries = []
    for name, shard, first_pid in zip(
        names, shards, shard_offsets([s.num_documents for s in shards]), strict=True
    ):
        entry = {"folder": name, "first_pid": first_pid, "num_documents": shard.num_documents}
        if shard.manifest.get("index_id"):
            entry["index_id"] = shard.manifest["index_id"]
        entries.append(entry)
    manifest = {
        **extra,
        "format": SHARDS_FORMAT,
        "format_version": SHARDS_FORMAT_VERSION,
        "num_documents": sum(shard.num_documents for shard in shards),
        "shards": entries,
    }
    write_json_atomically(folder / SHARDS_MANIFEST, manifest)
    return folder / SHARDS_MANIFEST


def check_shared_codec(shards: Sequence[Index]) -> None:
    """Raise ``IndexFormatError`` unless every shard has shard 0's dimension and centroids (one codec);
    ``IndexInputError`` when there is no shard."""
    if not shards:
        raise IndexInputError("a sharded index needs at least one shard, got an empty list")
    first = shards[0]
    for number, shard in enumerate(shards[1:], start=1):
        if shard.dim != first.dim or not torch.equal(shard.codec.centroids, first.codec.centroids):
            raise IndexFormatError(
                f"shard {number} ({shard.path}) has another codec than shard 0 ({first.path}): "
                "shards must be compressed with one shared codec for their scores to be comparable"
            )


def shard_paths(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The index folders of a sharded index folder, of a single index folder (one shard), or as listed."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not is_sharded_index(folder):
            return [folder]
        return [folder / entry["folder"] for entry in read_shards_manifest(folder)["shards"]]
    return [Path(path) for path in source]


def load_shards(source: ShardSource) -> list[Index]:
    """The shard indexes of ``source`` (see ``ShardedIndex.load``), checked like it."""
    return ShardedIndex.load(source).shards


def write_sharded_index(
    destination: str | os.PathLike,
    num_shards: int,
    write_shards: Callable[[list[Path]], Any],
    *,
    overwrite: bool = False,
    **extra: Any,
) -> Path:
    """Build ``num_shards`` shard indexes and publish them at ``destination`` as one sharded index.

    ``write_shards(paths)`` must write a complete index (e.g. ``IndexWriter(codec=shared).write``) at
    each of the given paths, in pid order, one after the other or in parallel; they lie inside a
    locked temporary folder, published atomically with its ``shards.json`` (``extra`` goes into it)
    once every shard is written, so ``destination`` appears complete or not at all. With one shard the
    result is a plain index folder. Raises ``IndexExistsError`` when ``destination`` exists and
    ``overwrite`` is False (or is a non-index folder), ``IndexFormatError`` when the shards' codecs
    differ. Returns ``destination``.

    Example:
        >>> from flmr.index import IndexWriter
        >>> codec = Index.load("my_index").codec  # one codec for every shard
        >>> writer = IndexWriter(nbits=codec.nbits, codec=codec, show_progress=False)
        >>> halves = [doc_embeddings[:4], doc_embeddings[4:]]  # 8 documents' vectors
        >>> write_sharded_index("out", 2, lambda paths: [writer.write(p, h) for p, h in zip(paths, halves)])
        PosixPath('out')
        >>> ShardedIndex.load("out").offsets
        [0, 4]
    """
    destination = Path(destination)
    names = shard_folder_names(num_shards)
    folder = new_build_folder(destination, overwrite, INDEX_MARKERS)
    try:
        write_shards([folder / name for name in names])
        if num_shards == 1:  # one shard is an ordinary index: it takes the place of the build folder
            publish_build_folder(folder / names[0], destination, overwrite, INDEX_MARKERS)
        else:
            write_shards_manifest(folder, names, **extra)
            publish_build_folder(folder, destination, overwrite, INDEX_MARKERS)
    finally:
        discard_build_folder(folder)
    return destination


class ShardedIndex:
    """Shard indexes with one shared codec, addressed as one index by global pid.

    Args:
        shards: the loaded shard indexes, in pid order.
        path: the sharded index folder they came from (holding ``shards.json``), or None when the
            shards were given as a list or as a single index folder.

    Use ``ShardedIndex.load``. Global pid ``p`` is local pid ``p - offsets[i]`` of shard ``i``, the
    last shard whose offset is at most ``p``. ``refresh`` follows other processes' commits; ``add``
    appends to the last shard (the only one that may grow without moving other pids).

    Example:
        >>> sharded = ShardedIndex.load(["my_sharded_index/shard-00000", "my_sharded_index/shard-00001"])
        >>> sharded.offsets, sharded.locate(sharded.offsets[1])
        ([0, 100], (1, 0))
        >>> sharded = ShardedIndex.load("my_sharded_index")  # the folder: adds also update shards.json
        >>> sharded.add([torch.nn.functional.normalize(torch.randn(30, sharded.dim), dim=-1)], documents=[{"id": "new"}])
        range(200, 201)
        >>> ShardedIndex.load("my_sharded_index").document(200).id
        'new'
    """

    def __init__(self, shards: Sequence[Index], path: Path | None = None) -> None:
        check_shared_codec(shards)
        self.shards = list(shards)
        self.path = path
        self._sizes = [shard.num_documents for shard in self.shards[:-1]]  # fixed: only the last grows
        self.offsets = shard_offsets([shard.num_documents for shard in self.shards])
        if path is not None:
            self._check_manifest(read_shards_manifest(path))

    @classmethod
    def load(
        cls,
        source: ShardSource | ShardedIndex,
        mmap: bool = True,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        auto_refresh: float | None = DEFAULT_AUTO_REFRESH,
    ) -> ShardedIndex:
        """Open a sharded index folder, a single index folder (one shard), or a list of shards.

        A list holds index folders or loaded ``Index`` objects, in pid order; ``mmap``, ``lock_timeout``
        and ``auto_refresh`` apply to the shards it loads (see ``Index``). Raises ``IndexFormatError``
        when a shard is missing or damaged, when ``shards.json`` disagrees with the shards (a shard
        rebuilt, swapped, or grown other than at the end) and when the shards' codecs differ;
        ``IndexInputError`` for an empty list.
        """
        if isinstance(source, ShardedIndex):
            return source

        def load_index(path: str | os.PathLike) -> Index:
            return Index.load(path, mmap, lock_timeout, auto_refresh)

        if isinstance(source, (str, os.PathLike)):
            folder = Path(source)
            if not is_sharded_index(folder):
                return cls([load_index(folder)])
            return cls([load_index(path) for path in shard_paths(folder)], folder)
        return cls([shard if isinstance(shard, Index) else load_index(shard) for shard in source])

    # -- properties ------------------------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def num_documents(self) -> int:
        return self.offsets[-1] + self.shards[-1].num_documents

    @property
    def dim(self) -> int:
        return self.shards[0].dim

    @property
    def nbits(self) -> int:
        """Bits per residual dimension of the shared codec."""
        return self.shards[0].nbits

    @property
    def codec(self) -> ResidualCodec:
        """The codec every shard shares."""
        return self.shards[0].codec

    @property
    def encoder(self) -> EncoderIdentity:
        """The encoder shard 0 recorded at build time (see ``Index.encoder``)."""
        return self.shards[0].encoder

    @property
    def generation(self) -> int:
        """The sum of the shards' generations: it grows with every add, upsert or delete of any shard."""
        return sum(shard.generation for shard in self.shards)

    @property
    def deleted(self) -> torch.Tensor:
        """(num_documents,) bool by global pid: True for deleted documents."""
        return torch.cat([shard.deleted for shard in self.shards])

    # -- reading ---------------------------------------------------------------------------------------
    def shard_numbers(self, pids: torch.Tensor) -> torch.Tensor:
        """(n,) long: the shard holding each global pid of the (n,) CPU tensor ``pids`` (in range)."""
        return torch.from_numpy(np.searchsorted(self.offsets, pids.numpy(), side="right") - 1)

    def locate(self, pid: int) -> tuple[int, int]:
        """(shard number, local pid) of global ``pid``; ``IndexError`` when it is out of range.

        Example:
            >>> ShardedIndex.load("my_sharded_index").locate(100)  # shards of 100 and 100 documents
            (1, 0)
        """
        if not 0 <= pid < self.num_documents:
            raise IndexError(f"pid {pid} out of range: the sharded index has {self.num_documents} documents")
        shard = int(self.shard_numbers(torch.tensor([pid]))[0])
        return shard, pid - self.offsets[shard]

    def document(self, pid: int) -> StoredDocument:
        """Stored fields of global ``pid``; ``IndexError`` when it is out of range."""
        shard, local = self.locate(pid)
        return self.shards[shard].document(local)

    def pid_of(self, document_id: Any) -> int | None:
        """The global pid of the live document stored with id ``document_id``, or None."""
        for shard, offset in zip(self.shards, self.offsets, strict=True):
            local = shard.pid_of(document_id)
            if local is not None:
                return offset + local
        return None

    def is_live(self, pid: int) -> bool:
        """Whether global ``pid`` is a document that was not deleted; ``IndexError`` when out of range."""
        shard, local = self.locate(pid)
        return not bool(self.shards[shard].deleted[local])

    # -- generations -----------------------------------------------------------------------------------
    def refresh(self, if_older_than: float = 0.0) -> bool:
        """Move every shard to its newest committed generation; True if any changed. With
        ``if_older_than`` (seconds), a shard checked more recently than that is left as it is (see
        ``Index.refresh``).

        Raises ``IndexFormatError`` when a shard other than the last changed size (its later shards'
        pids would move) or no longer matches ``shards.json``.
        """
        changed = False
        for shard in self.shards:
            changed |= shard.refresh(if_older_than)
        self._check_sizes()
        if self.path is not None:
            self._check_manifest(read_shards_manifest(self.path))
        return changed

    def refresh_if_due(self) -> bool:
        """``refresh`` with the shards' ``auto_refresh`` (never when it is ``None``), as ``Index.refresh_if_due``."""
        auto_refresh = self.shards[0].auto_refresh
        return auto_refresh is not None and self.refresh(auto_refresh)

    def _check_sizes(self) -> None:
        sizes = [shard.num_documents for shard in self.shards[:-1]]
        if sizes != self._sizes:
            raise IndexFormatError(
                f"shards other than the last changed size ({self._sizes} -> {sizes}), which moves the pids "
                "of the shards after them: the sharded index was rebuilt, or documents were added to a shard "
                "other than the last (add through ShardedIndex.add); load it again"
            )

    def _check_manifest(self, manifest: dict[str, Any]) -> None:
        """Check the shards against ``shards.json``: same count, same builds, recorded sizes."""
        entries = manifest["shards"]
        where = self.path / SHARDS_MANIFEST if self.path is not None else SHARDS_MANIFEST
        if len(entries) != len(self.shards):
            raise IndexFormatError(f"{where} names {len(entries)} shards, {len(self.shards)} are loaded")
        recorded = [entry["num_documents"] for entry in entries]
        actual = [shard.num_documents for shard in self.shards]
        if actual[:-1] != recorded[:-1] or actual[-1] < recorded[-1]:
            raise IndexFormatError(
                f"{where}: shard sizes {actual} disagree with the recorded {recorded} (only the last shard "
                "may have grown); rewrite it with write_shards_manifest after changing a shard"
            )
        for number, (entry, shard) in enumerate(zip(entries, self.shards, strict=True)):
            if entry.get("index_id") not in (None, shard.manifest.get("index_id")):
                raise IndexFormatError(
                    f"{where}: shard {number} ({shard.path}) is not the build it records (index_id "
                    f"{entry['index_id']}, found {shard.manifest.get('index_id')}): it was rebuilt or "
                    "replaced, so its pids may have changed; rebuild the sharded index"
                )

    # -- updating --------------------------------------------------------------------------------------
    def add(
        self,
        embeddings: EmbeddingsInput,
        doclens: torch.Tensor | Sequence[int] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        device: str | torch.device = "cpu",
    ) -> range:
        """Append documents to the LAST shard, compressed with the shared codec; returns their global pids.

        Only the last shard may grow: adding to another would move the pids of the shards after it.
        Accepts the inputs of ``Index.add``. Ids must be new in every shard (``DuplicateIdError``).
        With a sharded index folder the whole add holds its write lock (``.NAME.lock`` beside it) and
        ``shards.json`` then records the new size of the last shard; the shard's own commit is atomic,
        and a crash between it and the ``shards.json`` update leaves a readable index (the last shard
        may exceed its recorded size) that the next add records.
        """
        if self.path is None:
            return self._add(embeddings, doclens, documents, device)
        with write_lock(self.path, self.shards[-1].lock_timeout, "add"):
            manifest = read_shards_manifest(self.path)
            self.refresh()
            pids = self._add(embeddings, doclens, documents, device)
            extra = {key: value for key, value in manifest.items() if key not in ("num_documents", "shards")}
            _write_manifest(self.path, [entry["folder"] for entry in manifest["shards"]], self.shards, extra)
            return pids

    def _add(
        self,
        embeddings: EmbeddingsInput,
        doclens: torch.Tensor | Sequence[int] | None,
        documents: Sequence[Mapping[str, Any]] | None,
        device: str | torch.device,
    ) -> range:
        chunks = self._new_ids_only(iter_chunks(embeddings, doclens, documents))
        local = self.shards[-1].add(chunks, device=device)
        return range(self.offsets[-1] + local.start, self.offsets[-1] + local.stop)

    def _new_ids_only(self, chunks: Iterable[DocumentChunk]) -> Iterator[DocumentChunk]:
        """Pass ``chunks`` through, refusing ids a live document of another shard has (the last shard
        checks its own, and repeats within the batch)."""
        for chunk in chunks:
            for fields in chunk.documents or ():
                document_id = fields.get("id") if isinstance(fields, Mapping) else None
                if document_id is None:
                    continue
                for number, shard in enumerate(self.shards[:-1]):
                    local = shard.pid_of(document_id)
                    if local is not None:
                        raise DuplicateIdError(
                            f"document id {document_id!r} is already in shard {number} ({shard.path}, "
                            f"global pid {self.offsets[number] + local}); delete it first"
                        )
            yield chunk

    def delete(self, pids: Sequence[int] | torch.Tensor) -> None:
        """Mark documents (global pids) as deleted in their shards: they never come back from search.

        Each shard's deletions are atomic; ``IndexError`` (before anything is deleted) when a pid is out
        of range.
        """
        located = [self.locate(int(pid)) for pid in torch.as_tensor(pids, dtype=torch.long).flatten()]
        for number, shard in enumerate(self.shards):
            local = [pid for owner, pid in located if owner == number]
            if local:
                shard.delete(local)
