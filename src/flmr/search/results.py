"""Typed search results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from flmr.index.index import Index
from flmr.index.storage import StoredDocument
from flmr.search.errors import SearchError

if TYPE_CHECKING:
    from flmr.search.explain import Explanation


@dataclass(frozen=True)
class SearchHit:
    """One retrieved document: its pid, MaxSim score, 1-based rank and, when asked, its stored fields
    and an [`Explanation`] of its score."""

    pid: int
    score: float
    rank: int
    document: StoredDocument | None = None
    explanation: Explanation | None = None


def make_hits(
    pids: torch.Tensor, scores: torch.Tensor, index: Index | None = None, with_documents: bool = False
) -> list[SearchHit]:
    """Hits for one query from pids and scores sorted best first (scores of -inf are dropped).

    Raises:
        SearchError: ``with_documents`` without an ``index`` to read the documents from.
    """
    if with_documents and index is None:
        raise SearchError("return_documents=True needs an index with a document store")
    keep = torch.isfinite(scores)
    hits = []
    for rank, (pid, score) in enumerate(
        zip(pids[keep].tolist(), scores[keep].tolist(), strict=True), start=1
    ):
        document = index.document(pid) if with_documents and index is not None else None
        hits.append(SearchHit(pid=pid, score=score, rank=rank, document=document))
    return hits
