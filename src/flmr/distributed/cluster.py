"""Connecting to Ray: imported lazily, so that ``import flmr`` and the single-machine path never need it."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from flmr.extras import require_extra

LOCAL = "local"
# Ray rewrites 127.0.0.1 to the host's outward address; any other loopback address stays on loopback.
LOCAL_NODE_ADDRESS = "127.0.0.2"


def require_ray() -> ModuleType:
    """The ``ray`` module, or an ``ImportError`` that says how to install it.

    Example (what it returns depends on whether the ``ray`` extra is installed, so it is not run here):
        >>> ray = require_ray()  # doctest: +SKIP
    """
    return require_extra("ray", "ray")


def connect(address: str | None = LOCAL, num_cpus: int | None = None, **init_options: Any) -> ModuleType:
    """Connect this process to a Ray cluster (once) and return the ``ray`` module.

    ``address`` is a cluster address (``"auto"``, ``"10.0.0.1:6379"``, ``"ray://head:10001"``) or
    ``"local"`` (or None) for an in-process cluster of ``num_cpus`` CPUs (default: all) on loopback. When
    this process is already connected, that connection is kept.

    Example (starts a Ray cluster, so the tests do not run it):
        >>> ray = connect("local", num_cpus=2)  # doctest: +SKIP
        >>> ray.cluster_resources()["CPU"]  # doctest: +SKIP
        2.0
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **init_options}
    if address in (None, LOCAL):
        ray.init(num_cpus=num_cpus or os.cpu_count(), _node_ip_address=LOCAL_NODE_ADDRESS, **options)
    else:
        ray.init(address=address, **options)
    return ray


def default_cpus_per_worker(workers: int, gpus_per_worker: float) -> float:
    """CPUs reserved by each encoding actor so that Ray Data's read tasks always find a whole free CPU.

    Ray Data starts its actors before its read tasks; when the actors hold every CPU the reads wait
    forever (ray-project/ray#44687). GPU actors take 1 CPU each (the cluster has more); CPU actors share
    the cluster's CPUs less one.

    Example (CPU actors read the connected Ray cluster's size, so the tests do not run it):
        >>> default_cpus_per_worker(1, gpus_per_worker=1)  # a GPU actor: one CPU, whatever the cluster
        1.0
        >>> default_cpus_per_worker(2, 0), default_cpus_per_worker(1, 0)  # on a 2-CPU cluster  # doctest: +SKIP
        (0.5, 1.0)
    """
    if gpus_per_worker > 0:
        return 1.0
    total = require_ray().cluster_resources().get("CPU", 1.0)
    return max(0.25, min(1.0, (total - 1) / max(1, workers)))
