"""Packages whose public names are imported on first use (PEP 562), so that ``import flmr`` stays fast.

Example (in a package's ``__init__.py`` the call is ``lazy_exports(__name__, {...})``):
    >>> __getattr__, __dir__ = lazy_exports("flmr", {"Retriever": ".retrieval"})
    >>> __getattr__("Retriever").__module__, "Retriever" in __dir__()
    ('flmr.retrieval.retriever', True)
"""

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from flmr.extras import MissingExtraError, missing_extra


def lazy_exports(
    package: str, exports: dict[str, str], extra: str | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a name to the module (relative to
    ``package``) that defines it; other names are tried as the package's submodules.

    Args:
        package: the package's ``__name__``.
        exports: public name -> module that defines it, e.g. ``{"create_app": ".app"}``.
        extra: the ``flmr`` extra the package's modules need: an ``ImportError`` of a package outside
            flmr while importing one of them becomes a [`MissingExtraError`] naming it.
    """

    def load(module: str) -> Any:
        try:
            return importlib.import_module(module, package)
        except ImportError as error:
            missing = error.name or ""
            if extra is None or isinstance(error, MissingExtraError) or missing.split(".")[0] == "flmr":
                raise
            raise missing_extra(extra, missing) from error

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(load(exports[name]), name)
        elif importlib.util.find_spec(f"{package}.{name}") is not None:
            value = load(f".{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
