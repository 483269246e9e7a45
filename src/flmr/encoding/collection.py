"""Document collections in every form the library accepts, read as one record type.

Accepted forms:
- a list of strings (text-only documents);
- a list of ``(text, image_features, image_path)`` tuples, as in the original's README
  (either of the last two may be None; one image at most);
- rows with ``id``, ``text`` and optional ``image`` / ``image_path`` (one image),
  ``image_paths`` (a list of images), ``image_features`` (one vector, or one row per image) and
  ``metadata`` fields: a list of dicts, a ``datasets.Dataset``, or a JSONL file path.

A row may leave out its text when it has at least one image: an image-only document, whose text is
``""`` (the model then encodes only the tokenizer's [CLS], [D] and [SEP] for it, as for any empty text).
"""

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CollectionError

TEXT_FIELDS = ("text", "passage_content", "content")
IMAGE_PATH_FIELDS = ("image_path", "image", "img_path")
IMAGE_PATHS_FIELD = "image_paths"
KNOWN_FIELDS = {
    "id",
    "passage_id",
    *TEXT_FIELDS,
    *IMAGE_PATH_FIELDS,
    IMAGE_PATHS_FIELD,
    "image_features",
    "metadata",
}


@dataclass
class Document:
    """One document: its id, text, and optionally images (file paths or pre-extracted features).

    ``image_paths`` lists every image file; ``image_path`` is the first of them (the one the search
    service shows). ``image_features`` is one vector (one image) or a (num_images, hidden) array; when
    given, it is what the images are encoded from, and ``image_paths`` only name them.

    Example:
        >>> doc = Document("d1", "", image_paths=["front.jpg", "back.jpg"])
        >>> doc.image_path, doc.num_images, doc.modality
        ('front.jpg', 2, 'image_path')
    """

    id: str
    text: str
    image_path: str | None = None
    image_features: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    image_paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.image_paths and self.image_path is not None:
            self.image_paths = [self.image_path]
        elif self.image_path is None and self.image_paths:
            self.image_path = self.image_paths[0]
        elif self.image_paths and self.image_path != self.image_paths[0]:
            raise CollectionError(
                f"document {self.id!r}: image_path {self.image_path!r} is not the first of image_paths"
            )

    @property
    def modality(self) -> str:
        """``"text"``, ``"image_path"`` or ``"image_features"``: documents of one kind are batched together."""
        if self.image_features is not None:
            return "image_features"
        return "image_path" if self.image_paths else "text"

    @property
    def feature_rows(self) -> np.ndarray | None:
        """``image_features`` as (num_images, hidden) rows, or None."""
        if self.image_features is None:
            return None
        return self.image_features.reshape(-1, self.image_features.shape[-1])

    @property
    def num_images(self) -> int:
        """How many images the document's vectors hold a block for."""
        rows = self.feature_rows
        return len(self.image_paths) if rows is None else rows.shape[0]


def read_collection(collection: Any, image_root: str | os.PathLike | None = None) -> list[Document]:
    """Read ``collection`` (any accepted form, see the module docstring) into a list of documents.

    Relative image paths are resolved against ``image_root``. Raises [`CollectionError`] naming
    the first bad item: an empty collection, an item of an unknown form, a row without text.

    Example:
        >>> docs = read_collection(["Paris is the capital of France.", "Beijing is in China."])
        >>> docs[1].id, docs[1].modality
        ('1', 'text')
    """
    if isinstance(collection, (str, os.PathLike)):
        rows: Iterable[Any] = _read_jsonl(collection)
    else:
        rows = collection
    documents = [_to_document(item, position, image_root) for position, item in enumerate(rows)]
    if not documents:
        raise CollectionError("the collection is empty: give at least one document")
    _check_unique_ids(documents)
    return documents


def _read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    if not os.path.isfile(path):
        raise CollectionError(f"collection file {os.fspath(path)!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise CollectionError(f"{os.fspath(path)} line {line_number} is not JSON: {error}") from error


def _to_document(item: Any, position: int, image_root: str | os.PathLike | None) -> Document:
    if isinstance(item, str):
        return Document(id=str(position), text=item)
    if isinstance(item, Sequence) and len(item) == 3:
        text, features, image_path = item
        return _document(
            str(position),
            text,
            [] if image_path is None else [image_path],
            features,
            {},
            position,
            image_root,
            True,
        )
    if isinstance(item, dict):
        return _document_from_row(item, position, image_root)
    raise CollectionError(
        f"collection item {position} is a {type(item).__name__}: expected a string, a (text, image_features, "
        "image_path) tuple or a dict with 'text'"
    )


def _document_from_row(row: dict, position: int, image_root: str | os.PathLike | None) -> Document:
    text = next((row[name] for name in TEXT_FIELDS if row.get(name) is not None), None)
    doc_id = str(row.get("id", row.get("passage_id", position)))
    image_paths = _image_paths(row, doc_id, position)
    metadata = dict(row.get("metadata") or {})
    metadata.update({k: v for k, v in row.items() if k not in KNOWN_FIELDS})
    features = row.get("image_features")
    if text is None and (image_paths or features is not None):
        text = ""
    return _document(doc_id, text, image_paths, features, metadata, position, image_root, False)


def _image_paths(row: dict, doc_id: str, position: int) -> list[str]:
    paths = row.get(IMAGE_PATHS_FIELD)
    single = next((row[name] for name in IMAGE_PATH_FIELDS if isinstance(row.get(name), str)), None)
    if paths is None:
        return [] if single is None else [single]
    if isinstance(paths, str) or not all(isinstance(p, str) for p in paths):
        raise CollectionError(
            f"collection item {position} (id {doc_id!r}): image_paths must be a list of path strings"
        )
    paths = list(paths)
    # A row may repeat its first image as image_path, as Document.image_path does.
    if single is not None and (not paths or paths[0] != single):
        raise CollectionError(
            f"collection item {position} (id {doc_id!r}): image_path {single!r} and image_paths {paths!r} "
            "disagree; give image_paths alone"
        )
    return paths


def _document(
    doc_id: str,
    text: Any,
    image_paths: list[str],
    features: Any,
    metadata: dict,
    position: int,
    image_root: str | os.PathLike | None,
    one_image: bool,
) -> Document:
    if not isinstance(text, str):
        raise CollectionError(
            f"collection item {position} (id {doc_id!r}) has no text and no image (got {type(text).__name__})"
        )
    if image_root is not None:
        image_paths = [p if os.path.isabs(p) else os.path.join(image_root, p) for p in image_paths]
    array = None if features is None else np.asarray(features, dtype=np.float32)
    if array is not None:
        _check_features(array, len(image_paths), doc_id, position, one_image)
    return Document(id=doc_id, text=text, image_features=array, metadata=metadata, image_paths=image_paths)


def _check_features(array: np.ndarray, num_paths: int, doc_id: str, position: int, one_image: bool) -> None:
    where = f"collection item {position} (id {doc_id!r})"
    if one_image and array.ndim != 1:
        raise CollectionError(f"{where}: image_features must be one vector, got shape {array.shape}")
    if array.ndim not in (1, 2) or array.size == 0:
        raise CollectionError(
            f"{where}: image_features must be one vector or one row per image, got shape {array.shape}"
        )
    rows = 1 if array.ndim == 1 else array.shape[0]
    if num_paths and rows != num_paths:
        raise CollectionError(f"{where}: {rows} image_features rows for {num_paths} image_paths")


def _check_unique_ids(documents: list[Document]) -> None:
    seen: dict[str, int] = {}
    for position, document in enumerate(documents):
        if document.id in seen:
            raise CollectionError(
                f"collection items {seen[document.id]} and {position} share the id {document.id!r}; ids must be unique"
            )
        seen[document.id] = position
