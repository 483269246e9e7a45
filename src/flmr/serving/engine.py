"""The retrieval work behind the service: batched query encoding and search, document lookup."""

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from flmr.index import Index, StoredDocument
from flmr.retrieval import Retriever
from flmr.search import MetadataFilter, Searcher, SearchHit, build_searcher
from flmr.search.hybrid import HybridSearcher
from flmr.search.settings import Fusion, HybridSettings

from .errors import ServingError
from .inputs import ACCEPTED_IMAGE_FORMATS, InputError
from .settings import ServiceSettings

WARM_UP_QUERY = "warm-up query"


@dataclass(frozen=True)
class SearchQuery:
    """One query of a batch: its text, how many results it wants, and an optional decoded image.

    ``instruction`` is what a PreFLMR checkpoint reads before the text (None: the default for the
    query's form; see [`Retriever.query_texts`]).
    """

    text: str
    k: int
    image: Image.Image | None = None
    filter: MetadataFilter | None = None
    hybrid_weight: float | None = None
    fusion: Fusion = "linear"
    instruction: str | None = None

    def search_options(self) -> tuple:
        """What must be equal for queries to share one search call (besides their text and k)."""
        spec = None if self.filter is None else json.dumps(self.filter.spec, sort_keys=True)
        return self.image is not None, spec, self.hybrid_weight, self.fusion


class DocumentNotFound(ServingError, LookupError):
    """No document, or no servable image, for what was asked; the message says which."""


class ImageOutsideRoot(ServingError, PermissionError):
    """A document's stored image path resolves outside the folder images may be served from."""


class SearchEngine:
    """Encode and search batches of queries against one index with one retriever.

    Args:
        retriever: a [`Retriever`] holding the checkpoint the index was built with; it encodes queries.
        index: the loaded [`Index`], or a sharded index: the store documents are read from.
        settings: the service's [`ServiceSettings`] (search mode, image root).
        searcher: the [`Searcher`] over ``index`` (default: ``build_searcher(index, settings.search)``);
            e.g. a Ray sharded searcher. A request's hybrid fusion wraps it in a ``HybridSearcher``.

    Example:
        >>> engine = SearchEngine(Retriever.from_pretrained("my_checkpoint"), Index.load("my_index"))
        >>> engine.warm_up()  # raises EncoderMismatchError if the index was built with another checkpoint
        >>> hits = engine.search_batch([SearchQuery("Which editor runs in a terminal?", k=3)])[0]
    """

    def __init__(
        self,
        retriever: Retriever,
        index: Index,
        settings: ServiceSettings | None = None,
        searcher: Searcher | None = None,
    ) -> None:
        self.retriever = retriever
        self.index = index
        self.settings = settings or ServiceSettings()
        self.searcher = searcher or build_searcher(index, self.settings.search, device=retriever.device)
        self.ready = False
        self._searching = threading.Lock()  # held while a batch searches: the index moves on only between

    def warm_up(self) -> None:
        """Run one query end to end: checks the index fits the checkpoint and pays first-call costs.

        Raises:
            EncoderMismatchError: the index was built with another checkpoint than the retriever's.
        """
        self.retriever.check_index(self.index)
        self.search_batch([SearchQuery(WARM_UP_QUERY, k=1)])
        self.ready = True

    def search_batch(self, queries: Sequence[SearchQuery]) -> list[list[SearchHit]]:
        """The hits of every query, best first, all from one generation of the index.

        Before each batch the index moves to the newest committed generation if it was last checked
        over ``settings.index_refresh_seconds`` ago, so other processes' adds and deletes are served
        within that delay plus the batch in flight. Raises ``InputError`` (422) when the model's
        tokenizer rejects a query's text: the batcher then runs the batch's queries one by one, so only
        that query fails.
        """
        for query in queries:
            self._check_tokenizable(query)
        with self._searching:
            self.index.refresh(self.settings.index_refresh_seconds)
            return self._search_batch(queries)

    def _refresh_between_searches(self) -> None:
        """Move to the newest generation for a lookup, unless a batch is searching (it just did)."""
        if self._searching.acquire(blocking=False):
            try:
                self.index.refresh(self.settings.index_refresh_seconds)
            finally:
                self._searching.release()

    def _search_batch(self, queries: Sequence[SearchQuery]) -> list[list[SearchHit]]:
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
            texts = [query.text for query in group]
            vectors = self.retriever.encode_queries(
                texts,
                [query.image for query in group] if with_image else None,
                instruction=[query.instruction for query in group],
            )
            searcher = self.searcher
            if first.hybrid_weight is not None:
                searcher = HybridSearcher(
                    searcher, settings=HybridSettings(first.hybrid_weight, first.fusion)
                )
            hits = searcher.search(
                vectors, max(query.k for query in group), True, first.filter, query_texts=texts
            )
            for position, query, query_hits in zip(positions, group, hits, strict=True):
                results[position] = query_hits[: query.k]
        return results

    def _check_tokenizable(self, query: SearchQuery) -> None:
        text = self.retriever.query_texts(
            query.text, None if query.image is None else [query.image], instruction=query.instruction
        )
        try:
            self.retriever.model.query_tokenizer(text)
        except (TypeError, ValueError) as error:
            raise InputError(422, f"the model's tokenizer rejects the query text ({error})") from None

    def document(self, pid: int) -> StoredDocument:
        """Stored fields of document ``pid``; ``DocumentNotFound`` when there is none or it was deleted."""
        self._refresh_between_searches()
        if not 0 <= pid < self.index.num_documents or bool(self.index.deleted[pid]):
            raise DocumentNotFound(
                f"no document with pid {pid}: the index has pids 0..{self.index.num_documents - 1}"
            )
        return self.index.document(pid)

    def pid_of(self, document_id: str) -> int:
        """The pid of the live document stored with id ``document_id`` (ids are unique in an index)."""
        self._refresh_between_searches()
        pid = self.index.pid_of(document_id)
        if pid is None:
            raise DocumentNotFound(f"no document with id {document_id!r}")
        return pid

    def image_file(self, pid: int, number: int = 1) -> tuple[Path, str]:
        """The checked file of image ``number`` (1-based) of document ``pid`` and its media type.

        The path comes only from the index's stored fields (``StoredDocument.image_paths``). It is resolved (symbolic links
        included), must stay inside ``settings.image_root`` when one is set, and must be a regular
        file that opens as an accepted image format, so no other file can ever be served.
        """
        paths = self.document(pid).image_paths
        if not paths:
            raise DocumentNotFound(f"document {pid} has no image")
        if not 1 <= number <= len(paths):
            raise DocumentNotFound(f"document {pid} has images 1..{len(paths)}, not image {number}")
        stored = paths[number - 1]
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
