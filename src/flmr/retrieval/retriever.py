"""One object for the whole job: load a checkpoint, index collections, search them."""

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from flmr.encoding import (
    Document,
    DocumentEncoder,
    QueryEncoder,
    model_fingerprint,
    read_collection,
    same_encoder,
)
from flmr.encoding.queries import ImageInput
from flmr.index import DocumentChunk, Index, IndexExistsError, IndexWriter
from flmr.model import FLMRModelForRetrieval
from flmr.model.image_processing import load_image_processor
from flmr.search import ExactSearcher, PlaidSearcher, SearchHit

ENCODING_CHUNK_SIZE = 10_000


class EncoderMismatchError(ValueError):
    """An index was built with another checkpoint than the one that encodes the queries."""


def stored_fields(document: Document) -> dict[str, Any]:
    return {
        "id": document.id,
        "text": document.text,
        "image_path": document.image_path,
        "metadata": document.metadata,
    }


class Retriever:
    r"""Index and search collections with an FLMR / PreFLMR checkpoint.

    Args:
        model: an [`FLMRModelForRetrieval`] with its tokenizers.
        image_processor: for image files of documents and queries (default: the checkpoint's own,
            loaded when first needed).
        device: where encoding and search run.
        batch_size: documents or queries per forward pass.

    Example:
        >>> retriever = Retriever.from_pretrained("LinWeizheDragon/PreFLMR_ViT-B")
        >>> index = retriever.index(["Paris is in France.", "Rome is in Italy."], "my_index", nbits=2)
        >>> hits = retriever.search("Which city is in Italy?", index, k=1)[0]
        >>> hits[0].document.text
        'Rome is in Italy.'
    """

    def __init__(
        self,
        model: FLMRModelForRetrieval,
        image_processor: Any = None,
        device: str = "cpu",
        batch_size: int = 32,
    ):
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self._image_processor = image_processor
        self.fingerprint = model_fingerprint(self.model)

    @classmethod
    def from_pretrained(
        cls, checkpoint: str | os.PathLike, device: str = "cpu", **kwargs: Any
    ) -> "Retriever":
        """Load a checkpoint folder or hub name; ``kwargs`` go to the constructor."""
        return cls(FLMRModelForRetrieval.from_pretrained(checkpoint), device=device, **kwargs)

    @property
    def image_processor(self) -> Any:
        if self._image_processor is None:
            self._image_processor = load_image_processor(self.model.config)
        return self._image_processor

    # -------------------------------------------------------------------------------------------
    # indexing
    # -------------------------------------------------------------------------------------------
    def index(
        self,
        collection: Any,
        path: str | os.PathLike,
        nbits: int = 2,
        overwrite: bool = False,
        image_root: str | os.PathLike | None = None,
        max_length: int = 512,
        show_progress: bool = True,
        **writer_settings: Any,
    ) -> Index:
        """Encode ``collection`` (see [`read_collection`]) and build a compressed index at ``path``.

        Encoded chunks are kept in ``<path>.chunks/`` until the index is written, so an interrupted
        run resumes where it stopped when called again.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise IndexExistsError(f"an index already exists at {path}; pass overwrite=True to replace it")
        documents = read_collection(collection, image_root)
        chunk_dir = path.parent / f"{path.name}.chunks"
        writer = IndexWriter(nbits=nbits, device=self.device, **writer_settings)
        chunks = self._encoded_chunks(documents, chunk_dir, max_length, show_progress)
        index = writer.write(path, chunks, encoder=self.fingerprint, overwrite=overwrite)
        shutil.rmtree(chunk_dir, ignore_errors=True)
        return index

    def add(self, index: Index | str | os.PathLike, collection: Any, image_root: str | None = None) -> range:
        """Encode and append documents to an existing index; returns their pids."""
        index = self._open(index)
        documents = read_collection(collection, image_root)
        vectors = self._document_encoder(512, show_progress=False).encode(documents)
        return index.add(vectors, documents=[stored_fields(d) for d in documents], device=self.device)

    def _encoded_chunks(
        self, documents: list[Document], chunk_dir: Path, max_length: int, show_progress: bool
    ) -> Iterator[DocumentChunk]:
        encoder = self._document_encoder(max_length, show_progress)
        for chunk in encoder.encode_to_chunks(documents, chunk_dir, ENCODING_CHUNK_SIZE):
            fields = [
                stored_fields(d)
                for d in documents[chunk.first_document : chunk.first_document + len(chunk.doclens)]
            ]
            yield DocumentChunk(chunk.embeddings, chunk.doclens, fields)

    def _document_encoder(self, max_length: int, show_progress: bool) -> DocumentEncoder:
        return DocumentEncoder(
            self.model,
            batch_size=self.batch_size,
            max_length=max_length,
            image_processor=_LazyProcessor(self),
            show_progress=show_progress,
        )

    # -------------------------------------------------------------------------------------------
    # search
    # -------------------------------------------------------------------------------------------
    def encode_queries(
        self,
        queries: str | Sequence[str],
        images: Sequence[ImageInput] | ImageInput = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(num_queries, length, dim) query vectors; ``images`` holds one path, PIL image or None per query."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        if images is not None and (
            isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence)
        ):
            images = [images]
        encoder = QueryEncoder(
            self.model, _LazyProcessor(self) if images is not None else None, self.batch_size
        )
        return encoder.encode(texts, images=images, image_features=image_features)

    def search(
        self,
        queries: str | Sequence[str],
        index: Index | str | os.PathLike,
        k: int = 10,
        images: Sequence[ImageInput] | ImageInput = None,
        image_features: torch.Tensor | None = None,
        exact: bool = False,
        **plaid_settings: Any,
    ) -> list[list[SearchHit]]:
        """The top ``k`` documents of every query, with their stored fields.

        ``exact=True`` scores every document by full MaxSim (the quality reference); otherwise PLAID
        search with ``plaid_settings`` (``ncells``, ``centroid_score_threshold``, ``ndocs``,
        ``candidate_query_vectors``).
        """
        index = self._open(index)
        Q = self.encode_queries(queries, images, image_features)
        searcher = (
            ExactSearcher(index, device=self.device)
            if exact
            else PlaidSearcher(index, device=self.device, **plaid_settings)
        )
        return searcher.search(Q, k=k, return_documents=True)

    def _open(self, index: Index | str | os.PathLike) -> Index:
        index = index if isinstance(index, Index) else Index.load(index)
        built_with = index.encoder
        if built_with.get("digest") and not same_encoder(built_with, self.fingerprint):
            raise EncoderMismatchError(
                f"the index at {index.path} was built with another checkpoint "
                f"({built_with.get('checkpoint') or 'unnamed'}, digest {built_with['digest']}) than this retriever's "
                f"({self.fingerprint['checkpoint'] or 'unnamed'}, digest {self.fingerprint['digest']}): "
                "re-index with this checkpoint or search with the one that built it"
            )
        return index


class _LazyProcessor:
    """Loads the retriever's image processor only when an image is actually processed."""

    def __init__(self, retriever: Retriever):
        self.retriever = retriever

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.retriever.image_processor(*args, **kwargs)
