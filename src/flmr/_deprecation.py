"""Renamed keywords keep working for a while, with a ``DeprecationWarning`` that names the new one.

Example:
    >>> @renamed_keywords(max_length="doc_maxlen")
    ... def encode(texts, doc_maxlen=512):
    ...     return doc_maxlen
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     encode([], max_length=128)
    128
"""

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

Target = TypeVar("Target", bound=Callable[..., Any])


def warn_renamed(owner: str, old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``owner``'s ``old`` is now called ``new``."""
    warnings.warn(
        f"{owner}: {old!r} is deprecated and will be removed, use {new!r}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_keywords(**renames: str) -> Callable[[Target], Target]:
    """Decorate a function (or a class, whose ``__init__`` is wrapped) to accept each old keyword (the
    argument's name) for its new name (the argument's value), with a ``DeprecationWarning``.

    Raises:
        TypeError: a call gives both the old and the new name.
    """

    def decorate(target: Target) -> Target:
        function = target.__init__ if isinstance(target, type) else target
        owner = target.__qualname__

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{owner}() got both {old!r} and its new name {new!r}")
                warn_renamed(owner, old, new)
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        if isinstance(target, type):
            target.__init__ = wrapper  # type: ignore[misc]
            return target
        return wrapper  # type: ignore[return-value]

    return decorate
