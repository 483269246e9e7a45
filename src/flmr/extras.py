"""Optional features and the ``flmr[...]`` extras that install them.

The core install (``pip install flmr``) indexes, searches and scores; the HTTP service, hybrid BM25
search, M2KR evaluation, finetuning and Ray each need an extra. Their modules import the extra's
packages through [`require_extra`], when the feature is first used, so that ``import flmr`` works
without them and a missing extra is named in the error.

Example (``bm25s`` is installed here; ``no_such_package`` is not):
    >>> require_extra("bm25s", "hybrid", "hybrid search").__name__
    'bm25s'
    >>> require_extra("no_such_package", "hybrid", "hybrid search")
    Traceback (most recent call last):
    ...
    flmr.extras.MissingExtraError: hybrid search needs the `hybrid` extra (no_such_package is not installed): \
pip install "flmr[hybrid]"
"""

import importlib
from types import ModuleType

from flmr.errors import FLMRError

# extra -> what it is for, as the errors and the README name it
EXTRAS = {
    "serve": "the HTTP service (`flmr serve`)",
    "hybrid": "hybrid BM25 search (`hybrid_weight`, `--hybrid-weight`)",
    "evaluation": "M2KR evaluation (`flmr evaluate`) and Hugging Face datasets (`--dataset`)",
    "training": "finetuning (`flmr train`)",
    "ray": "scale-out on Ray (`--ray`)",
}


class MissingExtraError(FLMRError, ImportError):
    """An optional feature was used without the extra that installs its packages."""


def require_extra(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` (a package of the ``extra``), or raise a [`MissingExtraError`] naming the extra.

    Args:
        module: the module to import, e.g. ``"bm25s"``.
        extra: the ``flmr`` extra that installs it, a key of [`EXTRAS`].
        feature: what needs it, for the message (default: the extra's description).

    Raises:
        MissingExtraError: ``module`` cannot be imported; ``error.name`` is the missing module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise missing_extra(extra, error.name or module, feature) from error


def missing_extra(extra: str, missing: str, feature: str | None = None) -> MissingExtraError:
    """The error for ``feature`` (default: the ``extra``'s description) lacking the ``missing`` package."""
    return MissingExtraError(
        f"{feature or EXTRAS[extra]} needs the `{extra}` extra ({missing} is not installed): "
        f'pip install "flmr[{extra}]"',
        name=missing,
    )
