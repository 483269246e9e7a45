"""Errors of the encoding stage, under [`FLMRError`]."""

from flmr.errors import FLMRError


class EncodingError(FLMRError, ValueError):
    """Base of the encoding stage's errors: documents or queries that cannot be encoded as given."""


class CollectionError(EncodingError):
    """A collection, one of its documents, or an encoding run's files cannot be used; the message names which."""


class InstructionError(EncodingError):
    """An instruction the checkpoint would misread (it holds the instruction token before its end)."""
