"""Every public error of flmr is an FLMRError, a subclass of its stage's base and of the builtin it replaces."""

import builtins
import importlib
import inspect
import pkgutil

import pytest

import flmr
from flmr.errors import FLMRError

# error -> (its stage's base, the builtin exception callers caught before the hierarchy)
EXPECTED = {
    "flmr.model.errors.ModelInputError": ("flmr.model.errors.ModelError", ValueError),
    "flmr.model.errors.MissingTokenizerError": ("flmr.model.errors.ModelError", OSError),
    "flmr.encoding.CollectionError": ("flmr.encoding.EncodingError", ValueError),
    "flmr.encoding.InstructionError": ("flmr.encoding.EncodingError", ValueError),
    "flmr.index.IndexInputError": ("flmr.index.FLMRIndexError", ValueError),
    "flmr.index.IndexFormatError": ("flmr.index.FLMRIndexError", ValueError),
    "flmr.index.DuplicateIdError": ("flmr.index.FLMRIndexError", ValueError),
    "flmr.index.IndexExistsError": ("flmr.index.FLMRIndexError", FileExistsError),
    "flmr.index.IndexLockedError": ("flmr.index.FLMRIndexError", TimeoutError),
    "flmr.serving.InputError": ("flmr.serving.ServingError", ValueError),
    "flmr.serving.ServingSettingsError": ("flmr.serving.ServingError", ValueError),
    "flmr.serving.BatchResultError": ("flmr.serving.ServingError", RuntimeError),
    "flmr.evaluation.M2KRDataError": ("flmr.errors.FLMRError", ValueError),
    "flmr.evaluation.EvaluationStateError": ("flmr.evaluation.EvaluationError", ValueError),
    "flmr.evaluation.EvaluationSettingsError": ("flmr.evaluation.EvaluationError", ValueError),
    "flmr.training.TrainingDataError": ("flmr.training.TrainingError", ValueError),
    "flmr.training.TrainingConfigError": ("flmr.training.TrainingError", ValueError),
    "flmr.search.filters.FilterError": ("flmr.search.SearchError", ValueError),
    "flmr.search.SearchSettingsError": ("flmr.search.SearchError", ValueError),
    "flmr.retrieval.EncoderMismatchError": ("flmr.errors.FLMRError", ValueError),
    "flmr.serving.engine.DocumentNotFound": ("flmr.serving.ServingError", LookupError),
    "flmr.serving.engine.ImageOutsideRoot": ("flmr.serving.ServingError", PermissionError),
    "flmr.distributed.errors.DistributedError": ("flmr.errors.FLMRError", ValueError),
    "flmr.runtime.ThreadSettingsError": ("flmr.errors.FLMRError", ValueError),
    "flmr.extras.MissingExtraError": ("flmr.errors.FLMRError", ImportError),
}
BUILTIN_ERRORS = {
    value
    for value in vars(builtins).values()
    if inspect.isclass(value) and issubclass(value, Exception) and value is not Exception
}


def resolve(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_error_is_under_its_stage_base_and_the_builtin_it_replaces(name):
    error, (base, builtin) = resolve(name), EXPECTED[name]
    assert issubclass(error, resolve(base)) and issubclass(error, FLMRError)
    assert issubclass(error, builtin)


def flmr_error_classes() -> dict[str, type]:
    """Every public exception class defined in an importable flmr module (Ray's modules included)."""
    found = {}
    for info in pkgutil.walk_packages(flmr.__path__, "flmr."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_public_error_is_an_flmr_error_and_a_builtin_error():
    errors = flmr_error_classes()
    assert {resolve(name) for name in EXPECTED} <= set(errors.values())
    outside = sorted(name for name, error in errors.items() if not issubclass(error, FLMRError))
    assert outside == []
    for name, error in errors.items():
        if error.__subclasses__():  # the root and the stage bases
            continue
        assert set(error.__mro__) & BUILTIN_ERRORS, f"{name} subclasses no builtin error it replaces"


def test_the_root_is_exported_and_imports_nothing():
    assert flmr.FLMRError is FLMRError
    source = inspect.getsource(importlib.import_module("flmr.errors"))
    assert "\nimport " not in source and "\nfrom " not in source
