"""The contract every searcher implements: ``Searcher``.

Implementations: ``ExactSearcher`` (full MaxSim), ``PlaidSearcher`` (PLAID stages), ``ShardedSearcher``
(shards in this process), ``flmr.distributed.RayShardedSearcher`` (shards on a Ray cluster) and
``HybridSearcher`` (BM25 fusion around any of them). ``build_searcher`` (``flmr.search.build``) makes
the one a ``SearchSettings`` describes. One conformance suite
(``tests/search/test_searcher_contract.py``) checks every implementation against this docstring, so a
feature added to one searcher is checked in all.

What every ``search`` guarantees, for queries of shape (num_queries, q_len, dim) or one (q_len, dim):

- one list of hits per query, in query order; a query with no non-zero vector gets ``[]``;
- each list holds ``min(k, n)`` hits, where ``n`` counts the live documents with vectors that the
  ``filter`` keeps (PLAID probes more cells until it has enough candidates);
- hits are best first (score descending), ranked ``1..len``; deleted documents never appear;
- ``return_documents=True`` fills every hit's ``document`` with its stored fields;
- a query's hits do not depend on the other queries of its batch (up to float rounding);
- pids are those of the searcher's ``index`` (global pids for a sharded index).

Example:
    >>> from flmr.search import ExactSearcher, Searcher
    >>> isinstance(ExactSearcher([torch.ones(2, 4)]), Searcher)
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any

from flmr.search.errors import SearchError

if TYPE_CHECKING:
    import torch

    from flmr.index.index import Index
    from flmr.index.storage import StoredDocument
    from flmr.search.filters import MetadataFilter
    from flmr.search.results import SearchHit
    from flmr.search.settings import SearchSettings


class Searcher(ABC):
    """Top-k late-interaction search over one collection (see the module docstring for the guarantees).

    Attributes:
        index: the document store the pids refer to (an ``Index``, a sharded index, or None for raw
            embeddings held in memory).
        settings: the ``SearchSettings`` this searcher runs with.
    """

    index: Index | Any | None
    settings: SearchSettings

    @abstractmethod
    def search(
        self,
        queries: torch.Tensor,
        k: int = 10,
        return_documents: bool = False,
        filter: Mapping[str, Any] | MetadataFilter | None = None,
        *,
        query_texts: Sequence[str] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits of each query of a (num_queries, q_len, dim) batch of query vectors.

        Args:
            queries: float query vectors; all-zero rows (masked positions) are ignored.
            k: hits per query, at least 1.
            return_documents: attach each hit's stored fields.
            filter: keep only documents whose stored metadata match (see ``flmr.search.filters``).
            query_texts: the queries' texts, one per query; read by lexical fusion
                (``HybridSearcher``, which requires them) and ignored by searchers that score
                vectors alone.

        Raises:
            SearchError: ``k < 1``, query vectors of another width than the index's, or a filter or
                ``return_documents`` without a document store.
        """

    @property
    def num_documents(self) -> int:
        """Documents the pids range over (deleted ones included)."""
        return self._store().num_documents

    def document(self, pid: int) -> StoredDocument:
        """Stored fields of document ``pid``.

        Raises:
            SearchError: the searcher scores raw embeddings, which have no stored fields.
        """
        return self._store().document(pid)

    def _store(self) -> Any:
        if self.index is None:
            raise SearchError("this searcher scores raw embeddings: there is no document store")
        return self.index


def check_k(k: int) -> None:
    """``SearchError`` unless ``k`` is a positive count of hits."""
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise SearchError(f"k must be a positive integer, got {k!r}")
