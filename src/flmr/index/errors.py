"""Errors raised by the index: each names the offending path or input."""


class IndexFormatError(ValueError):
    """A folder is not a complete, readable flmr index (no or invalid manifest, missing files)."""


class IndexExistsError(FileExistsError):
    """Writing would replace an existing index and ``overwrite=True`` was not given."""
