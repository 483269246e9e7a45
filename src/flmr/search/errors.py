"""Errors of the search stage: one base class, ``SearchError``, a ``ValueError`` as before."""

from flmr.errors import FLMRError


class SearchError(FLMRError, ValueError):
    """A search that cannot run as asked: bad settings, queries, filters, or a store it needs is missing."""


class SearchSettingsError(SearchError):
    """A search setting out of range or unknown; the message names it and what is accepted."""
