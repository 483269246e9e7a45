"""``--quiet``: no progress bars and no log lines below ERROR, ours or the libraries'."""

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

_LIBRARY_LOGGERS = ("flmr", "transformers", "huggingface_hub")


@contextlib.contextmanager
def quiet_output(quiet: bool = True) -> Iterator[None]:
    """Within the block, when ``quiet``: no progress bars from transformers and huggingface_hub, no log
    lines below ERROR from flmr, transformers or huggingface_hub, no Python warnings; restored after.

    Imports neither torch nor transformers (the commands import them when they need them). flmr's own
    progress bars follow the commands' ``show_progress=False``.
    """
    if not quiet:
        yield
        return
    from huggingface_hub import utils as hub_utils

    saved_verbosity = os.environ.get("TRANSFORMERS_VERBOSITY")
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"  # the level transformers starts at if imported below
    loggers = [logging.getLogger(name) for name in _LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    bars = not hub_utils.are_progress_bars_disabled()
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        _set_progress_bars(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        _set_progress_bars(bars)
        if saved_verbosity is None:
            os.environ.pop("TRANSFORMERS_VERBOSITY", None)
        else:
            os.environ["TRANSFORMERS_VERBOSITY"] = saved_verbosity


def _set_progress_bars(enabled: bool) -> None:
    """Turn huggingface_hub's bars and, once it is imported, transformers' on or off."""
    from huggingface_hub import utils as hub_utils

    if "transformers.utils.logging" in sys.modules:
        from transformers.utils import logging as transformers_logging

        (transformers_logging.enable_progress_bar if enabled else transformers_logging.disable_progress_bar)()
    (hub_utils.enable_progress_bars if enabled else hub_utils.disable_progress_bars)()
