"""Why a document got its score: the document vector each query vector matched, and what it added.

A late-interaction score is a sum over query vectors of each one's best similarity to any document
vector. An [`Explanation`] lists, for every query vector that counts (all-zero ones, such as PreFLMR's
masked instruction, add nothing and are left out), the document vector it matched and that
similarity, its contribution; the contributions sum to the score. It is computed from the index's
vectors the searchers re-rank by (stored or decompressed, see ``Index.document_vectors``), so it
explains the score a search reports.

Example (``Retriever.explain`` labels the vectors with their tokens; here they are ``vector i``):
    >>> explanation = explain_document(index, pid=3, query_vectors=Q[0])
    >>> len(explanation.matches), len(explanation.document_tokens)  # query vectors, document vectors
    (32, ...)
    >>> match = explanation.top_matches(1)[0]  # the query vector that adds the most
    >>> match.query.label, match.document.label
    ('vector ...', 'vector ...')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from flmr.encoding.layout import DocumentToken
from flmr.index.index import Index


@dataclass(frozen=True)
class QueryToken:
    """One query vector: its position among the query's encoded vectors, ``kind`` (``"text"``,
    ``"instruction"`` for a token of the instruction read before the question, or ``"image"``) and
    ``label`` (the query token, ``[Q]``, ``[MASK]``, ``image i`` or ``image patch j``)."""

    position: int
    kind: str
    label: str


@dataclass(frozen=True)
class Match:
    """A query vector, the document vector it matched best, and their similarity: its contribution."""

    query: QueryToken
    document: DocumentToken
    contribution: float


@dataclass(frozen=True)
class Explanation:
    """How the score of document ``pid`` for one query adds up.

    Attributes:
        pid: the document.
        score: the sum of the contributions (the document's MaxSim score).
        query_tokens: the query vectors that count, in query order.
        document_tokens: one per stored vector of the document (image blocks, then text tokens).
        matches: one per query token, in the same order.
        document_contributions: per document token, the contributions of the query vectors that
            matched it (summed); what a page highlights.
    """

    pid: int
    score: float
    query_tokens: list[QueryToken]
    document_tokens: list[DocumentToken]
    matches: list[Match]
    document_contributions: list[float]

    def top_matches(self, count: int = 10) -> list[Match]:
        """The ``count`` matches that add the most, largest first."""
        return sorted(self.matches, key=lambda match: match.contribution, reverse=True)[:count]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: matches refer to query tokens by index and to document tokens by position.

        Each document token carries its ``contribution`` and, when some query vector matched it, the
        ``best_query`` label of the one that added the most there.
        """
        best_query: dict[int, Match] = {}
        for match in self.matches:
            current = best_query.get(match.document.position)
            if current is None or match.contribution > current.contribution:
                best_query[match.document.position] = match
        return {
            "pid": self.pid,
            "score": self.score,
            "query_tokens": [
                {"position": t.position, "kind": t.kind, "label": t.label} for t in self.query_tokens
            ],
            "document_tokens": [
                {
                    **token.to_dict(),
                    "contribution": contribution,
                    "best_query": best_query[token.position].query.label
                    if token.position in best_query
                    else None,
                }
                for token, contribution in zip(self.document_tokens, self.document_contributions, strict=True)
            ],
            "matches": [
                {"query": i, "document": match.document.position, "contribution": match.contribution}
                for i, match in enumerate(self.matches)
            ],
        }


def explain_document(
    index: Index,
    pid: int,
    query_vectors: torch.Tensor,
    query_labels: Sequence[tuple[str, str]] | None = None,
    document_tokens: Sequence[DocumentToken] | None = None,
    normalize_decompressed: bool = True,
) -> Explanation:
    """Explain document ``pid``'s score for one query's (q_len, dim) ``query_vectors``.

    ``query_labels`` holds a (kind, label) per query vector (default ``"vector i"``);
    ``document_tokens`` one [`DocumentToken`] per stored vector of the document (default, or when
    their count does not fit, ``"vector i"``). ``normalize_decompressed`` must match the searcher's
    (both default to True) for the score to be the one it reported.

    Example:
        >>> explanation = explain_document(index, 0, Q[0])
        >>> abs(sum(m.contribution for m in explanation.matches) - explanation.score) < 1e-5
        True
    """
    if query_vectors.ndim != 2 or query_vectors.shape[1] != index.dim:
        raise ValueError(f"query_vectors must be (q_len, {index.dim}), got {tuple(query_vectors.shape)}")
    if not 0 <= pid < index.num_documents:
        raise IndexError(f"pid {pid} out of range: the index has {index.num_documents} documents")
    if bool(index.deleted[pid]):
        raise ValueError(f"document {pid} was deleted from the index")
    if query_labels is not None and len(query_labels) != query_vectors.shape[0]:
        raise ValueError(f"{len(query_labels)} query labels for {query_vectors.shape[0]} query vectors")
    vectors, _ = index.document_vectors(torch.tensor([pid]), normalize=normalize_decompressed)
    if vectors.shape[0] == 0:
        raise ValueError(f"document {pid} has no vectors to explain")
    if document_tokens is None or len(document_tokens) != vectors.shape[0]:
        document_tokens = [DocumentToken(i, "vector", f"vector {i}") for i in range(vectors.shape[0])]

    query_vectors = query_vectors.detach().float().cpu()
    counted = (query_vectors.abs().amax(dim=-1) > 0).nonzero().flatten().tolist()
    similarities = vectors.float() @ query_vectors[counted].T  # (document vectors, counted query vectors)
    best, where = similarities.max(dim=0) if counted else (torch.empty(0), torch.empty(0, dtype=torch.long))
    per_document = torch.zeros(vectors.shape[0], dtype=torch.float64).index_add_(0, where, best.double())

    query_tokens = [
        QueryToken(p, *(query_labels[p] if query_labels is not None else ("vector", f"vector {p}")))
        for p in counted
    ]
    matches = [
        Match(token, document_tokens[d], c)
        for token, d, c in zip(query_tokens, where.tolist(), best.tolist(), strict=True)
    ]
    return Explanation(
        pid=pid,
        score=float(best.double().sum()),
        query_tokens=query_tokens,
        document_tokens=list(document_tokens),
        matches=matches,
        document_contributions=per_document.tolist(),
    )
