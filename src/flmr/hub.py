"""Reaching the Hugging Face hub only when asked, and failing fast when it cannot be reached.

huggingface_hub retries a connection that fails (5 times, with back-off) for each file it looks up, so
an unreachable hub (an offline machine, a firewall, ``HF_ENDPOINT`` pointing nowhere) stalls a lookup
for a minute or more unless ``HF_HUB_OFFLINE=1`` is set. Before flmr looks anything up on the hub it
calls [`hub_reachable`] (one request with a short timeout, once per process): when the hub cannot be
reached, what is in the local cache is used and anything else fails at once with a clear error.
"""

import functools
import os
from pathlib import Path

# seconds the reachability check waits for the hub's answer
PROBE_TIMEOUT_S = 3.0


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: no request is made at all."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


@functools.cache
def hub_reachable() -> bool:
    """True when the hub endpoint (``HF_ENDPOINT``) answers an HTTP request within ``PROBE_TIMEOUT_S``.

    Checked once per process, through huggingface_hub's own HTTP session (so its proxy settings
    apply); False in offline mode.
    """
    if hub_offline():
        return False
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
    except Exception:  # any failure to get an answer (refused, timed out, TLS, proxy) means unreachable
        return False
    return True


def hub_endpoint() -> str:
    """The hub address in use (``HF_ENDPOINT`` or https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def looks_like_local_path(name: str | os.PathLike) -> bool:
    """True when ``name`` can only be a path, not a hub repo id (``owner/name`` or ``name``).

    Example:
        >>> looks_like_local_path("./my_model"), looks_like_local_path("LinWeizheDragon/PreFLMR_ViT-B")
        (True, False)
    """
    text = str(name)
    return (
        isinstance(name, Path)
        or text.startswith((".", "~", os.sep, "/"))
        or os.path.isabs(text)
        or text.count("/") > 1
        or "\\" in text
    )


def unreachable_message(what: str, name: str) -> str:
    """The error text for ``what`` (e.g. "checkpoint") ``name`` that is neither here nor reachable."""
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set and it is not in the local hub cache"
    else:
        reason = f"the hub at {hub_endpoint()} cannot be reached and it is not in the local hub cache"
    return (
        f"{what} {name!r} is not a local folder, and {reason}: give the path of a local folder, "
        "or check the network (or HF_ENDPOINT) and try again"
    )


def cache_only(name: str | os.PathLike, what: str, probe_file: str, revision: str | None = None) -> bool:
    """Whether ``name`` (a folder or hub repo id) must be read from the local hub cache only.

    False for an existing folder (nothing is looked up) and for a repo id when the hub answers; True
    for a repo id whose ``probe_file`` is in the local cache while the hub cannot be reached (or
    ``HF_HUB_OFFLINE`` is set), so that nothing waits on the network.

    Args:
        name: a local folder or a hub repo id.
        what: what ``name`` is, for the errors (``"checkpoint"``, ``"image processor"``).
        probe_file: a file every such repo has (``"config.json"``), looked for in the cache.
        revision: the hub revision asked for, if any.

    Raises:
        OSError: ``name`` is a path that does not exist, or a repo id that is neither reachable nor cached.
    """
    if os.path.isdir(name):
        return False
    if looks_like_local_path(name):
        raise OSError(f"{what} folder {str(name)!r} does not exist")
    if not hub_offline() and hub_reachable():
        return False
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(str(name), probe_file, revision=revision), str):
        return True
    raise OSError(unreachable_message(what, str(name)))
