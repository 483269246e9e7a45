"""Accepted shapes of document embeddings, normalised into validated chunks of consecutive documents."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from flmr.index.errors import IndexInputError

DEFAULT_DOCS_PER_CHUNK = 4096


@dataclass
class DocumentChunk:
    """Consecutive documents: their token vectors laid end to end, and how many belong to each.

    Example:
        >>> chunk = DocumentChunk(torch.randn(5, 16), torch.tensor([2, 3]), [{"id": "a"}, {"id": "b"}])
        >>> chunk.num_documents
        2
    """

    embeddings: torch.Tensor  # (n_vectors, dim)
    doclens: torch.Tensor  # (n_docs,) integers summing to n_vectors
    documents: Sequence[Mapping[str, Any]] | None = None  # stored fields, one mapping per document

    @property
    def num_documents(self) -> int:
        return self.doclens.shape[0]


ChunkLike = DocumentChunk | Sequence[torch.Tensor] | tuple[torch.Tensor, torch.Tensor]
EmbeddingsInput = torch.Tensor | Sequence[torch.Tensor] | Iterable[ChunkLike]


def iter_chunks(
    embeddings: EmbeddingsInput,
    doclens: torch.Tensor | Sequence[int] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    docs_per_chunk: int = DEFAULT_DOCS_PER_CHUNK,
) -> Iterator[DocumentChunk]:
    """Yield ``DocumentChunk``s from any accepted input form.

    Accepted: a list of per-document (n_tokens_i, dim) tensors; a flat (N, dim) tensor with ``doclens``;
    or an iterable (e.g. a generator) of chunks, each a ``DocumentChunk``, a ``(flat, doclens)`` pair or
    a list of per-document tensors. ``documents`` (stored fields) goes with the first two forms; chunks
    carry their own.

    Raises:
        IndexInputError: a flat tensor without ``doclens``, or ``doclens`` / ``documents`` beside a form
            that carries its own, or per-document tensors that are not (n_tokens, dim) with one dim.

    Example:
        >>> [c.num_documents for c in iter_chunks([torch.randn(3, 8)] * 5, docs_per_chunk=2)]
        [2, 2, 1]
    """
    if isinstance(embeddings, torch.Tensor):
        if doclens is None:
            raise IndexInputError(
                "a flat (N, dim) embeddings tensor needs doclens (the vector count of each document)"
            )
        yield from _split_flat(embeddings, torch.as_tensor(doclens), documents, docs_per_chunk)
    elif is_document_list(embeddings):
        if doclens is not None:
            raise IndexInputError(
                "doclens is only for a flat tensor; a list of per-document tensors carries its lengths"
            )
        for start in range(0, len(embeddings), docs_per_chunk):
            group = embeddings[start : start + docs_per_chunk]
            yield DocumentChunk(
                torch.cat([d.reshape(-1, d.shape[-1]) for d in group]),
                torch.tensor([d.shape[0] for d in group]),
                documents[start : start + docs_per_chunk] if documents is not None else None,
            )
    else:
        if doclens is not None or documents is not None:
            raise IndexInputError("with an iterable of chunks, pass doclens and documents inside each chunk")
        for chunk in embeddings:
            yield _as_chunk(chunk)


def is_document_list(embeddings: object) -> bool:
    return isinstance(embeddings, Sequence) and all(isinstance(d, torch.Tensor) for d in embeddings)


def check_document_list(documents: Sequence[torch.Tensor]) -> None:
    """Raise ``IndexInputError`` naming the first per-document tensor that is not (n_tokens, dim) like the first."""
    dim = documents[0].shape[-1] if documents else None
    for pid, vectors in enumerate(documents):
        if vectors.ndim != 2:
            raise IndexInputError(
                f"document {pid} must be a 2-D (n_tokens, dim) tensor, got shape {tuple(vectors.shape)}"
            )
        if vectors.shape[1] != dim:
            raise IndexInputError(f"document {pid} has dim {vectors.shape[1]}, document 0 has dim {dim}")


def _split_flat(
    flat: torch.Tensor,
    doclens: torch.Tensor,
    documents: Sequence[Mapping[str, Any]] | None,
    docs_per_chunk: int,
) -> Iterator[DocumentChunk]:
    if doclens.ndim != 1 or doclens.numel() == 0 or int(doclens.sum()) != flat.shape[0]:
        raise IndexInputError(
            f"doclens must be a non-empty 1-D tensor summing to the {flat.shape[0]} embedding rows, "
            f"got shape {tuple(doclens.shape)} summing to {int(doclens.sum()) if doclens.numel() else 0}"
        )
    ends = doclens.cumsum(0)
    for start in range(0, doclens.shape[0], docs_per_chunk):
        stop = min(start + docs_per_chunk, doclens.shape[0])
        first_vector = int(ends[start - 1]) if start else 0
        yield DocumentChunk(
            flat[first_vector : int(ends[stop - 1])],
            doclens[start:stop],
            documents[start:stop] if documents is not None else None,
        )


def _as_chunk(chunk: ChunkLike) -> DocumentChunk:
    if isinstance(chunk, DocumentChunk):
        return chunk
    if (
        isinstance(chunk, tuple)
        and len(chunk) == 2
        and isinstance(chunk[0], torch.Tensor)
        and chunk[0].ndim == 2
    ):
        return DocumentChunk(chunk[0], torch.as_tensor(chunk[1]))
    if is_document_list(chunk) and len(chunk) > 0:
        return next(iter_chunks(list(chunk), docs_per_chunk=len(chunk)))
    raise TypeError(
        "each chunk must be a DocumentChunk, a (flat embeddings, doclens) pair or a list of per-document "
        f"tensors, got {type(chunk).__name__}"
    )


def validate_chunk(chunk: DocumentChunk, dim: int, first_pid: int) -> DocumentChunk:
    """Check shapes, dim, lengths, finiteness and stored-field count; return it with float32 embeddings.

    Raises:
        IndexInputError: the first check that fails, naming the chunk's documents (pids).
    """
    embeddings, doclens = chunk.embeddings, chunk.doclens
    where = f"documents {first_pid}..{first_pid + chunk.num_documents - 1}"
    if embeddings.ndim != 2:
        raise IndexInputError(
            f"{where}: embeddings must be 2-D (n_vectors, dim), got shape {tuple(embeddings.shape)}"
        )
    if embeddings.shape[1] != dim:
        raise IndexInputError(f"{where}: embeddings have dim {embeddings.shape[1]}, the index has dim {dim}")
    if doclens.ndim != 1 or doclens.dtype.is_floating_point or (doclens < 0).any():
        raise IndexInputError(
            f"{where}: doclens must be a 1-D tensor of non-negative integers, got {doclens}"
        )
    if int(doclens.sum()) != embeddings.shape[0]:
        raise IndexInputError(
            f"{where}: doclens sum to {int(doclens.sum())} but there are {embeddings.shape[0]} vectors"
        )
    if chunk.documents is not None and len(chunk.documents) != chunk.num_documents:
        raise IndexInputError(
            f"{where}: {len(chunk.documents)} stored documents for {chunk.num_documents} embeddings"
        )
    embeddings = embeddings.detach().float()
    if not torch.isfinite(embeddings).all():
        raise IndexInputError(f"{where}: embeddings contain NaN or infinite values")
    return DocumentChunk(embeddings, doclens.long(), chunk.documents)
