"""Errors of finetuning, under [`FLMRError`]."""

from flmr.errors import FLMRError


class TrainingError(FLMRError, ValueError):
    """Base of the training stage's errors."""


class TrainingDataError(TrainingError):
    """Training rows that cannot be used; the message names the file and row."""


class TrainingConfigError(TrainingError):
    """A finetuning configuration (or collator setting) that cannot be used; the message names it."""
