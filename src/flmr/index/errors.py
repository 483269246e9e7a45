"""Errors raised by the index: each names the offending path or input and says what to do."""

from flmr.errors import FLMRError

DAMAGED_HINT = (
    "run `flmr info --verify INDEX` to list every damaged file, then rebuild the index (or restore it "
    "from a backup)"
)


class FLMRIndexError(FLMRError):
    """Base of the index stage's errors (named so as not to shadow Python's ``IndexError``)."""


class IndexInputError(FLMRIndexError, ValueError):
    """Embeddings, doclens or documents given to an index writer that cannot be written as they are."""


class IndexFormatError(FLMRIndexError, ValueError):
    """A folder is not a complete, readable flmr index (no or invalid manifest, missing or damaged files)."""


class IndexExistsError(FLMRIndexError, FileExistsError):
    """Writing would replace an existing index and ``overwrite=True`` was not given."""


class IndexLockedError(FLMRIndexError, TimeoutError):
    """Another writer held the index's write lock for longer than the timeout; the message names it."""


class DuplicateIdError(FLMRIndexError, ValueError):
    """Documents added with an id that a live document of the index (or of the same batch) already has."""
