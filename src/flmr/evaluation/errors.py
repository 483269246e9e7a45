"""Errors of M2KR evaluation, under [`FLMRError`]."""

from flmr.data.m2kr import M2KRDataError
from flmr.errors import FLMRError


class EvaluationError(FLMRError, ValueError):
    """Base of the evaluation stage's errors."""


class EvaluationStateError(EvaluationError):
    """A run folder holds a run started with other settings, or an index built from other passages."""


class EvaluationSettingsError(EvaluationError):
    """Evaluation settings that cannot be used; the message names the setting."""


__all__ = ["EvaluationError", "EvaluationSettingsError", "EvaluationStateError", "M2KRDataError"]
