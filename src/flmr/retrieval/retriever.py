"""One object for the whole job: load a checkpoint, index collections, search them."""

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from flmr._deprecation import renamed_keywords
from flmr.encoding import (
    Document,
    DocumentEncoder,
    EncoderIdentity,
    QueryEncoder,
    encoder_identity,
    read_collection,
)
from flmr.encoding.layout import document_tokens
from flmr.encoding.queries import ImageInput, build_query_text
from flmr.errors import FLMRError
from flmr.index import DocumentChunk, Index, IndexExistsError, IndexWriter, stored_fields
from flmr.index.sharded import ShardedIndex, is_sharded_index
from flmr.model import FLMRModelForRetrieval
from flmr.model.image_processing import load_image_processor
from flmr.model.precision import apply_precision
from flmr.model.tokenization_flmr import DEFAULT_DOC_MAXLEN
from flmr.search import Explanation, SearchHit, build_searcher, explain_document
from flmr.search.filters import MetadataFilter
from flmr.search.settings import Fusion, SearchSettings, search_settings

ENCODING_CHUNK_SIZE = 10_000
STORAGE_DTYPE = "float16"  # DocumentEncoder's storage dtype, recorded with the index


def encoding_chunks_folder(path: str | os.PathLike) -> Path:
    """Where [`Retriever.index`] keeps the encoded chunks of the index at ``path`` until it is written:
    ``<path>.chunks/`` beside it; the state an interrupted run resumes from."""
    path = Path(path)
    return path.parent / f"{path.name}.chunks"


class EncoderMismatchError(FLMRError, ValueError):
    """An index was built with another checkpoint than the one that encodes the queries."""


def recorded_doc_maxlen(index: Index) -> int:
    """The token limit the index's documents were encoded with.

    Read from the index's encoding record; an index built before it existed is asked through the
    layout stored with its first document, and otherwise the encoder's default applies.
    """
    recorded = index.encoding.get("max_length")
    if recorded is None and index.num_documents:
        layout = index.document(0).vector_layout or []
        recorded = next((block.get("max_length") for block in layout if block.get("kind") == "text"), None)
    return int(recorded or DEFAULT_DOC_MAXLEN)


class Retriever:
    r"""Index and search collections with an FLMR / PreFLMR checkpoint.

    Args:
        model: an [`FLMRModelForRetrieval`] with its tokenizers.
        image_processor: for image files of documents and queries (default: the checkpoint's own,
            loaded when first needed).
        device: where encoding and search run.
        batch_size: documents or queries per forward pass.
        precision: ``"float32"``, ``"bfloat16"``, ``"int8"`` (dynamically quantised encoders, CPU only) or
            ``"auto"`` (bfloat16 on CPUs with native bfloat16 arithmetic, else float32); see
            [`flmr.model.precision`]; the model is converted in place. An index built in one precision
            is searched with any other.

    Example (``my_checkpoint`` is a tiny checkpoint of random weights, so its ranking means nothing):
        >>> retriever = Retriever.from_pretrained("my_checkpoint")
        >>> index = retriever.index(["Paris is in France.", "Rome is in Italy."], "cities", nbits=2)
        >>> hits = retriever.search("Which city is in Italy?", index, k=2)[0]
        >>> [hit.rank for hit in hits], sorted(hit.document.text for hit in hits)
        ([1, 2], ['Paris is in France.', 'Rome is in Italy.'])

    A published checkpoint loads the same way, from the model hub (not reached by the tests):

        >>> retriever = Retriever.from_pretrained("LinWeizheDragon/PreFLMR_ViT-B")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: FLMRModelForRetrieval,
        image_processor: Any = None,
        device: str = "cpu",
        batch_size: int = 32,
        precision: str = "float32",
    ):
        # The identity is the checkpoint's, taken before any change of precision.
        self.encoder_identity = encoder_identity(model)
        self.model = apply_precision(model.to(device), precision, device)
        self.device = device
        self.batch_size = batch_size
        self._image_processor = image_processor

    @property
    def fingerprint(self) -> EncoderIdentity:
        """[`encoder_identity`] under its earlier name."""
        return self.encoder_identity

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
    @renamed_keywords(max_length="doc_maxlen")
    def index(
        self,
        collection: Any,
        path: str | os.PathLike,
        nbits: int = 2,
        overwrite: bool = False,
        image_root: str | os.PathLike | None = None,
        doc_maxlen: int = DEFAULT_DOC_MAXLEN,
        show_progress: bool = True,
        **writer_settings: Any,
    ) -> Index:
        """Encode ``collection`` (see [`read_collection`]) and build a compressed index at ``path``.

        ``doc_maxlen`` is the token limit of a document (``max_length``, its earlier name, still works,
        with a ``DeprecationWarning``). Encoded chunks are kept in ``<path>.chunks/`` until the index is
        written, so an interrupted run resumes where it stopped when called again.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise IndexExistsError(f"an index already exists at {path}; pass overwrite=True to replace it")
        documents = read_collection(collection, image_root)
        chunk_dir = encoding_chunks_folder(path)
        writer = IndexWriter(nbits=nbits, device=self.device, show_progress=show_progress, **writer_settings)
        chunks = self._encoded_chunks(documents, chunk_dir, doc_maxlen, show_progress)
        encoding = {"max_length": doc_maxlen, "storage_dtype": STORAGE_DTYPE}  # the keys indexes record
        index = writer.write(
            path, chunks, encoder=self.encoder_identity, encoding=encoding, overwrite=overwrite
        )
        shutil.rmtree(chunk_dir, ignore_errors=True)
        return index

    def add(self, index: Index | str | os.PathLike, collection: Any, image_root: str | None = None) -> range:
        """Encode and append documents to an existing index; returns their pids.

        Documents are encoded as the index's were (its recorded ``doc_maxlen``). Raises
        ``DuplicateIdError`` naming an id the index already has (see [`upsert`]).
        """
        return self._add(index, collection, image_root, replace=False)

    def upsert(
        self, index: Index | str | os.PathLike, collection: Any, image_root: str | None = None
    ) -> range:
        """Like [`add`], but documents whose id is in the index replace those, in one commit."""
        return self._add(index, collection, image_root, replace=True)

    def _add(
        self, index: Index | str | os.PathLike, collection: Any, image_root: str | None, replace: bool
    ) -> range:
        index = self._open(index)
        documents = read_collection(collection, image_root)
        encoder = self._document_encoder(recorded_doc_maxlen(index), show_progress=False)
        vectors = encoder.encode(documents)
        fields = [
            stored_fields(d, encoder.layout(d, v.shape[0])) for d, v in zip(documents, vectors, strict=True)
        ]
        write = index.upsert if replace else index.add
        return write(vectors, documents=fields, device=self.device)

    def _encoded_chunks(
        self, documents: list[Document], chunk_dir: Path, doc_maxlen: int, show_progress: bool
    ) -> Iterator[DocumentChunk]:
        encoder = self._document_encoder(doc_maxlen, show_progress)
        for chunk in encoder.encode_to_chunks(documents, chunk_dir, ENCODING_CHUNK_SIZE):
            chunk_documents = documents[chunk.first_document : chunk.first_document + len(chunk.doclens)]
            fields = [
                stored_fields(d, encoder.layout(d, int(n)))
                for d, n in zip(chunk_documents, chunk.doclens, strict=True)
            ]
            yield DocumentChunk(chunk.embeddings, chunk.doclens, fields)

    def _document_encoder(self, doc_maxlen: int, show_progress: bool) -> DocumentEncoder:
        return DocumentEncoder(
            self.model,
            batch_size=self.batch_size,
            doc_maxlen=doc_maxlen,
            image_processor=_LazyProcessor(self),
            show_progress=show_progress,
        )

    # -------------------------------------------------------------------------------------------
    # search
    # -------------------------------------------------------------------------------------------
    def query_texts(
        self,
        queries: str | Sequence[str | None] | None,
        images: Sequence[ImageInput] | ImageInput = None,
        image_features: torch.Tensor | None = None,
        instruction: str | Sequence[str | None] | None = None,
    ) -> list[str]:
        """The text the model reads for each query: its instruction, then the question as typed.

        ``instruction`` (one for all queries, or one per query) defaults, for checkpoints with a
        ``mask_instruction_token`` (PreFLMR), to the instruction they were trained with for the query's
        form (see [`DEFAULT_INSTRUCTIONS`]); ``""`` means none. Checkpoints without it read the question
        alone unless an instruction is given. See [`build_query_text`].

        Example:
            >>> from flmr.model.tiny import tiny_model
            >>> preflmr = Retriever(tiny_model("preflmr"))  # a PreFLMR-style checkpoint (random weights)
            >>> preflmr.query_texts("Dune: who wrote the novel?")
            ['Retrieve documents that provide an answer to the question: Dune: who wrote the novel?']
            >>> retriever.query_texts("Dune: who wrote the novel?")  # an FLMR checkpoint reads the question alone
            ['Dune: who wrote the novel?']
        """
        texts, images = _query_inputs(queries, images)
        instructions = (
            [instruction] * len(texts)
            if instruction is None or isinstance(instruction, str)
            else list(instruction)
        )
        if len(instructions) != len(texts):
            raise ValueError(
                f"{len(instructions)} instructions for {len(texts)} queries: give one, or one per query"
            )
        token = self.model.config.mask_instruction_token
        return [
            build_query_text(
                text,
                image_features is not None or (images is not None and images[i] is not None),
                token,
                instructions[i],
                position=i,
            )
            for i, text in enumerate(texts)
        ]

    def encode_queries(
        self,
        queries: str | Sequence[str | None] | None,
        images: Sequence[ImageInput] | ImageInput = None,
        image_features: torch.Tensor | None = None,
        instruction: str | Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        """(num_queries, length, dim) query vectors; ``images`` holds one path, PIL image or None per query.

        A query may be None (or blank) when it has an image: an image-only query. Each query is encoded
        with its instruction (see [`query_texts`]).
        """
        model_texts = self.query_texts(queries, images, image_features, instruction)
        return self._encode(model_texts, _query_inputs(queries, images)[1], image_features)

    def _encode(
        self, model_texts: list[str], images: Sequence[ImageInput] | None, image_features: torch.Tensor | None
    ) -> torch.Tensor:
        encoder = QueryEncoder(
            self.model, _LazyProcessor(self) if images is not None else None, self.batch_size
        )
        return encoder.encode(model_texts, images=images, image_features=image_features)

    def search(
        self,
        queries: str | Sequence[str],
        index: Index | str | os.PathLike,
        k: int = 10,
        images: Sequence[ImageInput] | ImageInput = None,
        image_features: torch.Tensor | None = None,
        exact: bool | None = None,
        explain: bool = False,
        filter: Mapping[str, Any] | MetadataFilter | None = None,
        hybrid_weight: float | None = None,
        fusion: Fusion | None = None,
        instruction: str | Sequence[str | None] | None = None,
        *,
        settings: SearchSettings | None = None,
        **plaid_options: Any,
    ) -> list[list[SearchHit]]:
        """The top ``k`` documents of every query, with their stored fields.

        ``settings`` say how to search (see [`SearchSettings`]; default: PLAID with its default knobs).
        The earlier flat form still works: ``exact=True`` scores every document by full MaxSim (the
        quality reference), ``plaid_options`` are [`PlaidSettings`]' fields (``ncells``, ``ndocs``...);
        it cannot be mixed with ``settings``. ``explain=True`` attaches an [`Explanation`] of its late-interaction
        score to every hit (see [`explain`]; a hybrid search reports a fused score instead). A query
        may be None when it has an image (an image-only query).
        ``filter`` keeps only documents whose stored metadata match (see [`flmr.search.filters`], e.g.
        ``{"lang": "en", "year": {"$gte": 2000}}``). ``hybrid_weight`` in [0, 1] fuses the late-interaction
        scores with BM25 over the stored texts, with that share for BM25 (``fusion``: ``"linear"`` or
        ``"rrf"``; see [`HybridSearcher`]); hits then carry the fused score, BM25 reading the question alone.
        ``instruction`` is what PreFLMR checkpoints read before each question (default: the one they were
        trained with for the query's form; see [`query_texts`]).
        """
        settings = search_settings(settings, exact=exact, **plaid_options)
        if hybrid_weight is not None:
            settings = settings.with_hybrid(hybrid_weight, fusion or "linear")
        index = self._open(index)
        model_texts = self.query_texts(queries, images, image_features, instruction)
        Q = self._encode(model_texts, _query_inputs(queries, images)[1], image_features)
        texts = [text or "" for text in _query_inputs(queries, images)[0]]
        searcher = build_searcher(index, settings, device=self.device)
        results = searcher.search(Q, k, True, filter, query_texts=texts)
        if not explain:
            return results
        _, query_images = _query_inputs(queries, images)
        normalize = settings.normalize_decompressed
        explained = []
        for q, (text, hits) in enumerate(zip(model_texts, results, strict=True)):
            has_image = image_features is not None or (
                query_images is not None and query_images[q] is not None
            )
            labels = QueryEncoder(self.model).vector_labels(text, Q.shape[1], has_image)
            explained.append(
                [
                    replace(hit, explanation=self._explain_pid(index, hit.pid, Q[q], labels, normalize))
                    for hit in hits
                ]
            )
        return explained

    def explain(
        self,
        query: str | None,
        hit_or_pid: SearchHit | int,
        index: Index | str | os.PathLike,
        images: ImageInput | Sequence[ImageInput] = None,
        image_features: torch.Tensor | None = None,
        normalize_decompressed: bool = True,
        instruction: str | None = None,
    ) -> Explanation:
        """Which document vector each vector of ``query`` matched in a hit, and what each added to its score.

        ``hit_or_pid`` is a [`SearchHit`] of this query or a pid; ``images`` the query's image (a path,
        PIL image, or a one-item list) and ``instruction`` as given to [`search`]. The contributions sum to
        the score the search reported (the query is encoded again, so up to float rounding). Instruction
        tokens are labelled as such (kind ``"instruction"``); PreFLMR masks them, so they add nothing.

        Example:
            >>> hit = retriever.search("capital of France", index, k=1)[0][0]
            >>> explanation = retriever.explain("capital of France", hit, index)
            >>> [match.query.label for match in explanation.matches[:5]]  # one match per query vector
            ['[CLS]', '[Q]', 'capital', 'of', 'france']
            >>> abs(sum(match.contribution for match in explanation.matches) - hit.score) < 1e-3
            True
        """
        return self.explain_hits(
            query, [hit_or_pid], index, images, image_features, normalize_decompressed, instruction
        )[0]

    def explain_hits(
        self,
        query: str | None,
        hits_or_pids: Sequence[SearchHit | int],
        index: Index | str | os.PathLike,
        images: ImageInput | Sequence[ImageInput] = None,
        image_features: torch.Tensor | None = None,
        normalize_decompressed: bool = True,
        instruction: str | None = None,
    ) -> list[Explanation]:
        """[`explain`] for several hits of one query, encoding the query once."""
        index = self._open(index)
        model_texts = self.query_texts(query, images, image_features, instruction)
        _, query_images = _query_inputs(query, images)
        Q = self._encode(model_texts, query_images, image_features)
        if Q.shape[0] != 1:
            raise ValueError(f"explain takes one query, got {Q.shape[0]}")
        has_image = image_features is not None or (query_images is not None and query_images[0] is not None)
        labels = QueryEncoder(self.model).vector_labels(model_texts[0], Q.shape[1], has_image)
        return [
            self._explain_pid(
                index, hit if isinstance(hit, int) else hit.pid, Q[0], labels, normalize_decompressed
            )
            for hit in hits_or_pids
        ]

    def _explain_pid(
        self,
        index: Index,
        pid: int,
        query_vectors: torch.Tensor,
        labels: list[tuple[str, str]],
        normalize_decompressed: bool,
    ) -> Explanation:
        if isinstance(index, ShardedIndex):  # explained in its shard, reported under its global pid
            shard, local = index.locate(pid)
            explanation = self._explain_pid(
                index.shards[shard], local, query_vectors, labels, normalize_decompressed
            )
            return replace(explanation, pid=pid)
        stored = index.document(pid)
        tokens = document_tokens(
            stored.text,
            stored.vector_layout,
            int(index.doclens[pid]),
            self.model.context_tokenizer,
            mask_punctuation=self.model.config.mask_punctuation,
            image_block=self.model.config.mapping_network_prefix_length,
            has_image=stored.image_path is not None,
        )
        return explain_document(index, pid, query_vectors, labels, tokens, normalize_decompressed)

    def _open(self, index: Index | ShardedIndex | str | os.PathLike) -> Index | ShardedIndex:
        """Load ``index`` (an index or sharded index folder), or move an open one to the newest
        generation (at most every ``auto_refresh`` s); then check it was built with this checkpoint."""
        if isinstance(index, (Index, ShardedIndex)):
            index.refresh_if_due()
        elif is_sharded_index(index):
            index = ShardedIndex.load(index)
        else:
            index = Index.load(index)
        self.check_index(index)
        return index

    def check_index(self, index: Index | ShardedIndex) -> None:
        """Check that ``index`` (or every shard of a sharded index) was built with this retriever's checkpoint.

        Raises:
            EncoderMismatchError: it records another checkpoint (digest or weights).
        """
        for part in index.shards if isinstance(index, ShardedIndex) else [index]:
            if not part.encoder.compatible_with(self.encoder_identity):
                raise EncoderMismatchError(
                    f"the index at {part.path} was built with another checkpoint ({part.encoder.describe()}) "
                    f"than this retriever's ({self.encoder_identity.describe()}): "
                    "re-index with this checkpoint or search with the one that built it"
                )


def _query_inputs(
    queries: str | Sequence[str | None] | None, images: Sequence[ImageInput] | ImageInput
) -> tuple[list[str | None], Sequence[ImageInput] | None]:
    """Queries as a list, and images as one entry per query (or None)."""
    texts = [queries] if queries is None or isinstance(queries, str) else list(queries)
    if images is not None and (isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence)):
        images = [images]
    return texts, images


class _LazyProcessor:
    """Loads the retriever's image processor only when an image is actually processed."""

    def __init__(self, retriever: Retriever):
        self.retriever = retriever

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.retriever.image_processor(*args, **kwargs)
