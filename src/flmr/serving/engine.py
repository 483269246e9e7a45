"""The retrieval work behind the service: batched query encoding and search, document lookup."""

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from flmr.index import Index, StoredDocument
from flmr.retrieval import Retriever
from flmr.search import MetadataFilter, SearchHit
from flmr.search.hybrid import Fusion

from .inputs import ACCEPTED_IMAGE_FORMATS
from .settings import ServiceSettings

WARM_UP_QUERY = "warm-up query"


@dataclass(frozen=True)
class SearchQuery:
    """One query of a batch: its text, how many results it wants, and an optional decoded image."""

    text: str
    k: int
    image: Image.Image | None = None
    filter: MetadataFilter | None = None
    hybrid_weight: float | None = None
    fusion: Fusion = "linear"

    def search_options(self) -> tuple:
        """What must be equal for queries to share one search call (besides their text and k)."""
        spec = None if self.filter is None else json.dumps(self.filter.spec, sort_keys=True)
        return self.image is not None, spec, self.hybrid_weight, self.fusion


class DocumentNotFound(LookupError):
    """No document, or no servable image, for what was asked; the message says which."""


class ImageOutsideRoot(PermissionError):
    """A document's stored image path resolves outside the folder images may be served from."""


class SearchEngine:
    """Encode and search batches of queries against one index with one retriever.

    Args:
        retriever: a [`Retriever`] holding the checkpoint the index was built with.
        index: the loaded [`Index`].
        settings: the service's [`ServiceSettings`] (search mode, image root).

    Example:
        >>> engine = SearchEngine(Retriever.from_pretrained("my_checkpoint"), Index.load("my_index"))
        >>> engine.warm_up()  # raises EncoderMismatchError if the index was built with another checkpoint
        >>> hits = engine.search_batch([SearchQuery("Which editor runs in a terminal?", k=3)])[0]
    """

    def __init__(self, retriever: Retriever, index: Index, settings: ServiceSettings | None = None) -> None:
        self.retriever = retriever
        self.index = index
        self.settings = settings or ServiceSettings()
        self.ready = False
        self._pids_by_id: dict[str, int] = {}
        self._pids_by_id_generation = -1
        self._pids_by_id_lock = threading.Lock()

    def warm_up(self) -> None:
        """Run one query end to end: checks the index fits the checkpoint and pays first-call costs."""
        self.search_batch([SearchQuery(WARM_UP_QUERY, k=1)])
        self.ready = True

    def search_batch(self, queries: Sequence[SearchQuery]) -> list[list[SearchHit]]:
        """The hits of every query, best first; queries with and without images are encoded separately."""
        results: list[list[SearchHit]] = [[] for _ in queries]
        # Text-only and image queries differ in length; grouping them keeps every query's vectors
        # (and so its results) independent of which other queries shared its batch. Queries with
        # other filters or fusion settings need their own search call.
        groups: dict[tuple, list[int]] = {}
        for position, query in enumerate(queries):
            groups.setdefault(query.search_options(), []).append(position)
        for positions in groups.values():
            group = [queries[i] for i in positions]
            first = group[0]
            with_image = first.image is not None
            # PLAID's candidates (and hybrid fusion's) do not depend on k for k <= ndocs // 2 (and
            # k <= the fusion depth), so one search with the largest k gives every query its own top-k.
            hits = self.retriever.search(
                [query.text for query in group],
                self.index,
                k=max(query.k for query in group),
                images=[query.image for query in group] if with_image else None,
                exact=self.settings.exact,
                filter=first.filter,
                hybrid_weight=first.hybrid_weight,
                fusion=first.fusion,
                **self.settings.plaid_settings,
            )
            for position, query, query_hits in zip(positions, group, hits, strict=True):
                results[position] = query_hits[: query.k]
        return results

    def document(self, pid: int) -> StoredDocument:
        """Stored fields of document ``pid``; ``DocumentNotFound`` when there is none or it was deleted."""
        if not 0 <= pid < self.index.num_documents or bool(self.index.deleted[pid]):
            raise DocumentNotFound(
                f"no document with pid {pid}: the index has pids 0..{self.index.num_documents - 1}"
            )
        return self.index.document(pid)

    def pid_of(self, document_id: str) -> int:
        """The pid of the document stored with id ``document_id`` (the last one, if ids repeat)."""
        with self._pids_by_id_lock:
            if self._pids_by_id_generation != self.index.generation:
                # Built on first use and after updates: the store is read document by document.
                self._pids_by_id = {
                    str(self.index.document(pid).id): pid for pid in range(self.index.num_documents)
                }
                self._pids_by_id_generation = self.index.generation
            pid = self._pids_by_id.get(document_id)
        if pid is None or bool(self.index.deleted[pid]):
            raise DocumentNotFound(f"no document with id {document_id!r}")
        return pid

    def image_file(self, pid: int) -> tuple[Path, str]:
        """The checked image file of document ``pid`` and its media type.

        The path comes only from the index's stored fields. It is resolved (symbolic links
        included), must stay inside ``settings.image_root`` when one is set, and must be a regular
        file that opens as an accepted image format, so no other file can ever be served.
        """
        stored = self.document(pid).image_path
        if not stored:
            raise DocumentNotFound(f"document {pid} has no image")
        path = Path(stored)
        if not path.is_absolute() and self.settings.image_root is not None:
            path = self.settings.image_root / path
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise DocumentNotFound(f"the image of document {pid} is missing") from None
        root = self.settings.image_root
        if root is not None and not resolved.is_relative_to(root.resolve()):
            raise ImageOutsideRoot(f"the image of document {pid} is outside the served image folder")
        if not resolved.is_file():
            raise DocumentNotFound(f"the image of document {pid} is not a file")
        try:
            with Image.open(resolved, formats=list(ACCEPTED_IMAGE_FORMATS)) as image:
                image_format = image.format
        except (UnidentifiedImageError, OSError):
            raise DocumentNotFound(f"the image file of document {pid} is not an image") from None
        return resolved, ACCEPTED_IMAGE_FORMATS[image_format]
