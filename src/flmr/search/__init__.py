"""Searchers over late-interaction embeddings: PLAID over a compressed index, exact MaxSim, metadata
filters (`flmr.search.filters`) and hybrid BM25 fusion (`flmr.search.hybrid`, the ``hybrid`` extra).

Names are imported on first use, so that ``flmr.search.filters`` (JSON filters, checked by the command
line before anything else loads) does not pull in torch.

Example:
    >>> from flmr.search import PlaidSearcher
    >>> hits = PlaidSearcher("my_index").search(query_embeddings, k=10)  # doctest: +SKIP
"""

from flmr._lazy import lazy_exports

_EXPORTS = {
    "ExactSearcher": ".exact",
    **dict.fromkeys(("Explanation", "Match", "QueryToken", "explain_document"), ".explain"),
    **dict.fromkeys(("FilterError", "MetadataFilter", "compile_filter"), ".filters"),
    **dict.fromkeys(("HybridHit", "HybridSearcher"), ".hybrid"),
    "PlaidSearcher": ".plaid",
    "SearchHit": ".results",
    "ShardedSearcher": ".sharded",
    "Searcher": ".base",
    "build_searcher": ".build",
    **dict.fromkeys(("SearchError", "SearchSettingsError"), ".errors"),
    **dict.fromkeys(("HybridSettings", "PlaidSettings", "SearchSettings"), ".settings"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ExactSearcher",
    "HybridSettings",
    "PlaidSettings",
    "SearchError",
    "SearchSettings",
    "SearchSettingsError",
    "Searcher",
    "build_searcher",
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
