"""Document collections in every form the library accepts, read as one record type.

Accepted forms:
- a list of strings (text-only documents);
- a list of ``(text, image_features, image_path)`` tuples, as in the original's README
  (either of the last two may be None);
- rows with ``id``, ``text`` and optional ``image`` / ``image_path``, ``image_features`` and
  ``metadata`` fields: a list of dicts, a ``datasets.Dataset``, or a JSONL file path.
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
KNOWN_FIELDS = {"id", "passage_id", *TEXT_FIELDS, *IMAGE_PATH_FIELDS, "image_features", "metadata"}


@dataclass
class Document:
    """One document: its id, text, and optionally an image (a file path or pre-extracted features)."""

    id: str
    text: str
    image_path: str | None = None
    image_features: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        """``"text"``, ``"image_path"`` or ``"image_features"``: documents of one kind are batched together."""
        if self.image_features is not None:
            return "image_features"
        return "image_path" if self.image_path is not None else "text"


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
        return _document(str(position), text, image_path, features, {}, position, image_root)
    if isinstance(item, dict):
        return _document_from_row(item, position, image_root)
    raise CollectionError(
        f"collection item {position} is a {type(item).__name__}: expected a string, a (text, image_features, "
        "image_path) tuple or a dict with 'text'"
    )


def _document_from_row(row: dict, position: int, image_root: str | os.PathLike | None) -> Document:
    text = next((row[name] for name in TEXT_FIELDS if row.get(name) is not None), None)
    image_path = next((row[name] for name in IMAGE_PATH_FIELDS if isinstance(row.get(name), str)), None)
    doc_id = row.get("id", row.get("passage_id", position))
    metadata = dict(row.get("metadata") or {})
    metadata.update({k: v for k, v in row.items() if k not in KNOWN_FIELDS})
    return _document(str(doc_id), text, image_path, row.get("image_features"), metadata, position, image_root)


def _document(
    doc_id: str,
    text: Any,
    image_path: str | None,
    features: Any,
    metadata: dict,
    position: int,
    image_root: str | os.PathLike | None,
) -> Document:
    if not isinstance(text, str):
        raise CollectionError(
            f"collection item {position} (id {doc_id!r}) has no text (got {type(text).__name__})"
        )
    if image_path is not None and image_root is not None and not os.path.isabs(image_path):
        image_path = os.path.join(image_root, image_path)
    array = None if features is None else np.asarray(features, dtype=np.float32)
    if array is not None and array.ndim != 1:
        raise CollectionError(
            f"collection item {position} (id {doc_id!r}): image_features must be one vector, got shape {array.shape}"
        )
    return Document(id=doc_id, text=text, image_path=image_path, image_features=array, metadata=metadata)


def _check_unique_ids(documents: list[Document]) -> None:
    seen: dict[str, int] = {}
    for position, document in enumerate(documents):
        if document.id in seen:
            raise CollectionError(
                f"collection items {seen[document.id]} and {position} share the id {document.id!r}; ids must be unique"
            )
        seen[document.id] = position
