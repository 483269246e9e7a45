"""Errors of the HTTP service, under [`FLMRError`]."""

from flmr.errors import FLMRError


class ServingError(FLMRError):
    """Base of the service's errors."""


class InputError(ServingError, ValueError):
    """A request the service refuses; ``status`` is the HTTP status code that says why.

    Example:
        >>> InputError(413, "image too large").status
        413
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServingSettingsError(ServingError, ValueError):
    """Service or batching settings that cannot be used; the message names the setting."""


class BatchResultError(ServingError, RuntimeError):
    """``process_batch`` broke its contract (not one result per request): a bug, not a bad request."""
