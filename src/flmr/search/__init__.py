"""Searchers over late-interaction embeddings: PLAID over a compressed index, exact MaxSim, metadata
filters (`flmr.search.filters`) and hybrid BM25 fusion (`flmr.search.hybrid`).

Example:
    >>> from flmr.search import PlaidSearcher
    >>> hits = PlaidSearcher("my_index").search(query_embeddings, k=10)  # doctest: +SKIP
"""

from flmr.search.exact import ExactSearcher
from flmr.search.explain import Explanation, Match, QueryToken, explain_document
from flmr.search.filters import FilterError, MetadataFilter, compile_filter
from flmr.search.hybrid import HybridHit, HybridSearcher
from flmr.search.plaid import PlaidSearcher
from flmr.search.results import SearchHit
from flmr.search.sharded import ShardedSearcher

__all__ = [
    "ExactSearcher",
    "Explanation",
    "FilterError",
    "HybridHit",
    "HybridSearcher",
    "Match",
    "MetadataFilter",
    "PlaidSearcher",
    "QueryToken",
    "SearchHit",
    "ShardedSearcher",
    "compile_filter",
    "explain_document",
]
