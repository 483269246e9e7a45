"""Searchers over late-interaction embeddings: PLAID over a compressed index, and exact MaxSim.

Example:
    >>> from flmr.search import PlaidSearcher
    >>> hits = PlaidSearcher("my_index").search(query_embeddings, k=10)  # doctest: +SKIP
"""

from flmr.search.exact import ExactSearcher
from flmr.search.plaid import PlaidSearcher
from flmr.search.results import SearchHit

__all__ = ["ExactSearcher", "PlaidSearcher", "SearchHit"]
