"""``build_searcher``: the searcher a ``SearchSettings`` describes, over a single or a sharded index."""

from __future__ import annotations

from pathlib import Path

import torch

from flmr.index.index import Index
from flmr.index.sharded import ShardedIndex, is_sharded_index
from flmr.search.base import Searcher
from flmr.search.settings import SearchSettings


def build_searcher(
    index: Index | ShardedIndex | str | Path,
    settings: SearchSettings | None = None,
    *,
    device: str | torch.device = "cpu",
) -> Searcher:
    """The searcher for ``settings`` over ``index`` (an ``Index``, an index folder, a ``ShardedIndex``
    or a sharded index folder with ``shards.json``).

    ``settings.exact`` picks ``ExactSearcher`` over ``PlaidSearcher``; a sharded folder gets a
    ``ShardedSearcher`` of those; ``settings.hybrid`` wraps the result in a ``HybridSearcher``.

    Raises:
        IndexFormatError: the folder holds no index (or an invalid ``shards.json``).
        SearchSettingsError: hybrid fusion over raw embeddings.

    Example:
        >>> type(build_searcher("my_index", SearchSettings(exact=True))).__name__
        'ExactSearcher'
        >>> searcher = build_searcher("my_index", SearchSettings(exact=True).with_hybrid(0.3))
        >>> type(searcher).__name__, type(searcher.searcher).__name__
        ('HybridSearcher', 'ExactSearcher')
    """
    from flmr.search.exact import ExactSearcher
    from flmr.search.plaid import PlaidSearcher
    from flmr.search.sharded import ShardedSearcher

    settings = settings or SearchSettings()
    searcher: Searcher
    if isinstance(index, ShardedIndex) or (isinstance(index, (str, Path)) and is_sharded_index(index)):
        searcher = ShardedSearcher(index, settings=settings, device=device)
    elif settings.exact:
        searcher = ExactSearcher(index, settings=settings, device=device)
    else:
        searcher = PlaidSearcher(index, settings=settings, device=device)
    if settings.hybrid is None:
        return searcher
    from flmr.search.hybrid import HybridSearcher

    return HybridSearcher(searcher, settings=settings.hybrid)
