"""The search flags shared by ``flmr search``, ``flmr serve`` and ``flmr evaluate``, and the
``SearchSettings`` they make (no torch import: the flags are checked before anything heavy loads)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from flmr.search.settings import CANDIDATE_QUERY_VECTORS, SearchSettings


def add_search_options(parser: argparse.ArgumentParser, exact_help: str, plaid_defaults: str) -> None:
    """Add ``--exact`` and the PLAID knobs (``--ncells``, ``--centroid-score-threshold``, ``--ndocs``,
    ``--candidate-query-vectors``); ``plaid_defaults`` says where their defaults come from."""
    parser.add_argument("--exact", action="store_true", help=exact_help)
    plaid = parser.add_argument_group(f"PLAID search (defaults: {plaid_defaults})")
    plaid.add_argument("--ncells", type=int, help="centroids probed per query vector")
    plaid.add_argument("--centroid-score-threshold", type=float, help="centroid pruning threshold")
    plaid.add_argument("--ndocs", type=int, help="candidates kept after centroid interaction")
    plaid.add_argument(
        "--candidate-query-vectors",
        choices=CANDIDATE_QUERY_VECTORS,
        help="query vectors that generate candidates",
    )


def search_settings_from_args(args: argparse.Namespace, base: SearchSettings | None = None) -> SearchSettings:
    """``base`` (default: ``SearchSettings()``) with the flags the user gave.

    Raises:
        SearchSettingsError: a flag's value is out of range (e.g. ``--ndocs 0``).

    Example:
        >>> args = argparse.Namespace(exact=False, ncells=8, centroid_score_threshold=None, ndocs=None,
        ...                           candidate_query_vectors=None)
        >>> search_settings_from_args(args).plaid.ncells
        8
    """
    base = base or SearchSettings()
    given = {
        name: getattr(args, name)
        for name in ("ncells", "centroid_score_threshold", "ndocs", "candidate_query_vectors")
        if getattr(args, name) is not None
    }
    return replace(base, exact=args.exact or base.exact, plaid=replace(base.plaid, **given))
