"""The search flags shared by ``flmr search``, ``flmr serve`` and ``flmr evaluate``, and the
``SearchSettings`` they make (no torch import: the flags are checked before anything heavy loads)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from flmr.search.settings import CANDIDATE_QUERY_VECTORS, PlaidSettings, SearchSettings

from .loading import positive_int


def plaid_defaults(settings: PlaidSettings | None = None) -> str:
    """The PLAID knobs of ``settings`` (default: ``PlaidSettings()``) as the flags that set them.

    Example:
        >>> plaid_defaults(PlaidSettings(ncells=2))
        '--ncells 2 --centroid-score-threshold 0.3 --ndocs 2048 --candidate-query-vectors all'
    """
    settings = settings or PlaidSettings()
    return (
        f"--ncells {settings.ncells} --centroid-score-threshold {settings.centroid_score_threshold} "
        f"--ndocs {settings.ndocs} --candidate-query-vectors {settings.candidate_query_vectors}"
    )


def add_search_options(parser: argparse.ArgumentParser, exact_help: str, defaults: str | None = None) -> None:
    """Add ``--exact`` and the PLAID knobs (``--ncells``, ``--centroid-score-threshold``, ``--ndocs``,
    ``--candidate-query-vectors``); ``defaults`` says what they are when not given (default: those of
    ``PlaidSettings``). Counts below 1 are usage errors, caught before anything loads."""
    parser.add_argument("--exact", action="store_true", help=exact_help)
    plaid = parser.add_argument_group(f"PLAID search (defaults: {defaults or plaid_defaults()})")
    plaid.add_argument("--ncells", type=positive_int, help="centroids probed per query vector")
    plaid.add_argument("--centroid-score-threshold", type=float, help="centroid pruning threshold")
    plaid.add_argument("--ndocs", type=positive_int, help="candidates kept after centroid interaction")
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
