"""The root of the errors flmr raises on purpose; each stage has one base error below it.

Catch [`FLMRError`] to handle any error flmr raises about its inputs, files or settings, or a stage's
base to handle that stage's. Every concrete error also subclasses the builtin exception it replaces
(``ValueError`` for a value that cannot be used, ``FileExistsError``, ``TimeoutError``, ``OSError``,
``ImportError``, ``RuntimeError``), so code that catches the builtin keeps working::

    FLMRError
    ├── ModelError                    flmr.model.errors
    │   ├── ModelInputError           (ValueError) a configuration, input or argument the model cannot use
    │   └── MissingTokenizerError     (OSError) a checkpoint without its tokenizer folders
    ├── EncodingError (ValueError)    flmr.encoding.errors
    │   ├── CollectionError           a collection, document or encoding run that cannot be used
    │   └── InstructionError          a query instruction that cannot be used
    ├── FLMRIndexError                flmr.index.errors
    │   ├── IndexInputError           (ValueError) embeddings, doclens or documents that cannot be written
    │   ├── IndexFormatError          (ValueError) a folder that is not a complete, readable index
    │   ├── DuplicateIdError          (ValueError) an id a live document already has
    │   ├── IndexExistsError          (FileExistsError) writing would replace an index
    │   └── IndexLockedError          (TimeoutError) another writer holds the index's lock
    ├── SearchError (ValueError)      flmr.search.errors
    │   ├── SearchSettingsError       a search setting out of range or unknown
    │   └── FilterError               a metadata filter that cannot be used
    ├── ServingError                  flmr.serving.errors
    │   ├── InputError                (ValueError) a request the service refuses, with its HTTP status
    │   ├── ServingSettingsError      (ValueError) service settings that cannot be used
    │   └── BatchResultError          (RuntimeError) a batch function that broke its contract
    ├── EvaluationError (ValueError)  flmr.evaluation.errors
    │   ├── EvaluationStateError      a run folder left by another model or settings
    │   └── EvaluationSettingsError   evaluation settings that cannot be used
    ├── TrainingError (ValueError)    flmr.training.errors
    │   ├── TrainingDataError         training rows that cannot be used
    │   └── TrainingConfigError       a finetuning configuration that cannot be used
    ├── DistributedError (ValueError) flmr.distributed.errors: a scale-out setting or input that cannot be used
    ├── ThreadSettingsError           (ValueError) flmr.runtime: a thread or core setting that cannot be used
    ├── M2KRDataError                 (ValueError) flmr.data.m2kr: missing M2KR data or columns
    └── MissingExtraError             (ImportError) flmr.extras: a feature used without its extra

This module imports nothing, so every stage (``flmr.model`` and ``flmr.index`` included) may use it.
"""


class FLMRError(Exception):
    """Base of every error flmr raises on purpose; the message names the bad input and what to do."""


__all__ = ["FLMRError"]
