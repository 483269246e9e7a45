"""Errors of the model stage (configurations, checkpoints, forward passes), under [`FLMRError`]."""

from flmr.errors import FLMRError


class ModelError(FLMRError):
    """Base of the model stage's errors."""


class ModelInputError(ModelError, ValueError):
    """A configuration, model input or argument (precision, style...) the model cannot use; the message
    names it and the values it accepts."""


class MissingTokenizerError(ModelError, OSError):
    """A checkpoint lacks its ``query_tokenizer/`` or ``context_tokenizer/`` folder (``folder``)."""

    def __init__(self, folder: str, message: str):
        super().__init__(message)
        self.folder = folder
