"""How many CPU threads flmr's work runs with: sized to the work, to the cores the process may use and
to the cores other processes are using right now, unless the user chose a count.

PyTorch starts one intra-op thread per core. Its OpenMP threads wait for each other at the end of every
parallel kernel, spinning, so when another process holds one of the cores, every kernel waits for a
thread that is not running: on 2 cores with one competing process, 2 threads made PLAID search 20x
and ``query()`` 10x slower than 1 thread. [`cpu_threads`] therefore runs a piece of work with

    min(cores this process may use, cores not busy with other processes, work / MIN_WORK_PER_THREAD)

threads (at least 1), where the cores it may use are its CPU affinity (``os.sched_getaffinity``)
capped by its cgroup CPU quota, and the busy cores are measured from ``/proc/stat`` over the last
moments minus this process's own CPU time. It is applied by ``FLMRModelForRetrieval.query()`` /
``doc()`` and by the PLAID and exact searchers.

A count the user chose always wins, and flmr then changes nothing:

- ``FLMR_NUM_THREADS=n`` (environment): flmr's work runs with ``n`` threads;
- ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set, or ``torch.set_num_threads(n)`` with ``n`` other than
  torch's default (one per physical core): flmr keeps torch's count as it is.

Example:
    >>> from flmr.runtime import cpu_threads, usable_cpus
    >>> usable_cpus() >= 1  # this process's cores: affinity capped by the cgroup quota
    True
    >>> with cpu_threads(work=5e9) as threads:  # 5 GFLOP of work: up to 5 threads where the cores are free
    ...     1 <= threads <= usable_cpus()
    True
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import torch

from flmr.errors import FLMRError

NUM_THREADS_ENV = "FLMR_NUM_THREADS"
USER_THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Below ~1 GFLOP per thread (10-20 ms of one core) a second thread costs more in synchronisation
# than it saves, even on an idle machine.
MIN_WORK_PER_THREAD = 1e9
# How old the measurement of other processes' CPU use may be before it is taken again (seconds).
LOAD_SAMPLE_SECONDS = 0.25
_FIRST_SAMPLE_SECONDS = 0.1
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC = Path("/proc")


class ThreadSettingsError(FLMRError, ValueError):
    """A thread or core setting (``FLMR_NUM_THREADS``, a reservation) that cannot be used."""


_scope = threading.local()
F = TypeVar("F", bound=Callable[..., Any])


def requested_threads() -> int | None:
    """The thread count set by ``FLMR_NUM_THREADS``, or None when it is not set.

    Raises:
        ThreadSettingsError: when the variable is not a positive integer.
    """
    value = os.environ.get(NUM_THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ThreadSettingsError(
            f"{NUM_THREADS_ENV}={value!r}: give a positive number of threads, e.g. {NUM_THREADS_ENV}=2"
        )
    return int(value)


def usable_cpus() -> int:
    """Cores this process may use: its CPU affinity, capped by its cgroup CPU quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, quota)) if quota is not None else max(1, cpus)


@lru_cache(maxsize=1)
def cgroup_cpu_quota(root: Path = _CGROUP_ROOT, proc: Path = _PROC) -> int | None:
    """The CPU quota of this process's cgroup in whole cores (rounded up), or None when unlimited.

    Reads cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` along the process's
    cgroup path and its parents; the tightest limit wins.
    """
    limits = []
    for relative, v2 in _cgroup_paths(proc):
        folder = root / relative.lstrip("/") if v2 else root / "cpu" / relative.lstrip("/")
        for directory in [folder, *folder.parents]:
            if not directory.is_relative_to(root):
                break
            limit = _cpu_limit(directory, v2)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def _cgroup_paths(proc: Path) -> list[tuple[str, bool]]:
    """(path, is_v2) of this process's cpu cgroups, from ``/proc/self/cgroup``."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            paths.append((path, True))
        elif "cpu" in controllers.split(","):
            paths.append((path, False))
    return paths


def _cpu_limit(directory: Path, v2: bool) -> int | None:
    try:
        if v2:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        else:
            quota = (directory / "cpu.cfs_quota_us").read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
    except (OSError, ValueError):
        return None
    if quota in ("max", "-1") or int(period) <= 0:
        return None
    return max(1, -(-int(quota) // int(period)))


def physical_cores(cpus: set[int] | None = None) -> int:
    """Distinct physical cores among ``cpus`` (default: this process's affinity), from sysfs topology."""
    try:
        cpus = cpus if cpus is not None else os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def user_threads() -> int | None:
    """The thread count the user chose for this thread's work, or None when flmr may choose.

    ``FLMR_NUM_THREADS`` first; then torch's current count when ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
    is set or ``torch.set_num_threads`` changed it from torch's default (one per physical core, or per
    usable logical CPU).
    """
    requested = requested_threads()
    if requested is not None:
        return requested
    current = getattr(_scope, "outside", None) or torch.get_num_threads()
    if any(os.environ.get(name, "").strip() for name in USER_THREAD_ENVS):
        return current
    return None if current in _torch_defaults() else current


@lru_cache(maxsize=1)
def _torch_defaults() -> frozenset[int]:
    """Counts torch starts with when nobody set one (its builds differ: physical or logical cores)."""
    return frozenset({physical_cores(), usable_cpus(), os.cpu_count() or 1})


class _OtherProcessesLoad:
    """Cores that other processes kept busy lately: busy time of this process's CPUs in ``/proc/stat``
    minus this process's own CPU time, over the last ``LOAD_SAMPLE_SECONDS`` or more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, float, float] | None = None
        self._busy_cores = 0.0

    def busy_cores(self) -> float:
        with self._lock:
            if self._last is None:  # first use: measure a short window now
                self._last = _cpu_sample()
                time.sleep(_FIRST_SAMPLE_SECONDS)
                self._update(_cpu_sample())
            now = _cpu_sample()
            if now[0] - self._last[0] >= LOAD_SAMPLE_SECONDS:
                self._update(now)
            return self._busy_cores

    def _update(self, now: tuple[float, float, float]) -> None:
        assert self._last is not None
        elapsed = now[0] - self._last[0]
        others = (now[1] - self._last[1]) - (now[2] - self._last[2])
        self._busy_cores = max(0.0, others / max(elapsed, 1e-3))
        self._last = now


def _cpu_sample() -> tuple[float, float, float]:
    """(wall seconds, busy CPU-seconds of this process's CPUs, this process's CPU-seconds)."""
    return time.monotonic(), _busy_cpu_seconds(), time.process_time()


def _busy_cpu_seconds(stat: Path = _PROC / "stat") -> float:
    """CPU-seconds the CPUs of this process's affinity spent busy (or stolen by the hypervisor)."""
    try:
        cpus = {f"cpu{c}" for c in os.sched_getaffinity(0)}
        lines = stat.read_text().splitlines()
    except (AttributeError, OSError):
        return 0.0
    ticks = 0
    for line in lines:
        name, *values = line.split()
        if name in cpus:
            numbers = [int(v) for v in values]
            idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)  # idle + iowait
            guest = sum(numbers[8:10])  # guest time is also counted in user time
            ticks += sum(numbers) - idle - guest
    return ticks / os.sysconf("SC_CLK_TCK")


_load = _OtherProcessesLoad()


_reserved = {"cpus": 0}


def reserve_cpus(count: int) -> int:
    """Keep ``count`` usable cores free of flmr's sized work (e.g. for a service's request handling).

    Returns the previous reservation, to restore it. Sized work still gets at least one thread.

    Raises:
        ThreadSettingsError: ``count`` is negative.
    """
    if count < 0:
        raise ThreadSettingsError(f"cannot reserve {count} cores: give 0 or more")
    previous, _reserved["cpus"] = _reserved["cpus"], count
    return previous


def free_cpus() -> int:
    """Usable cores neither reserved ([`reserve_cpus`]) nor busy with other processes lately (at least 1)."""
    usable = usable_cpus()
    not_busy = int(usable - _load.busy_cores() + 0.5)
    return max(1, min(usable - _reserved["cpus"], not_busy))


def threads_for(work: float) -> int:
    """Threads for ``work`` FLOP: the user's count when one was chosen, else one per
    ``MIN_WORK_PER_THREAD`` of work, at most [`free_cpus`], at least 1."""
    chosen = user_threads()
    if chosen is not None:
        return chosen
    by_work = max(1, int(work // MIN_WORK_PER_THREAD))
    return by_work if by_work == 1 else min(by_work, free_cpus())


@contextmanager
def cpu_threads(work: float) -> Iterator[int]:
    """Run the body with [`threads_for`] ``(work)`` torch threads in this thread; restores the count after.

    Nested scopes size themselves against the count outside the outermost scope. Yields the count.
    """
    outside = torch.get_num_threads()
    depth = getattr(_scope, "depth", 0)
    if depth == 0:
        _scope.outside = outside
    _scope.depth = depth + 1
    try:
        count = threads_for(work)
        if count != outside:
            torch.set_num_threads(count)
        yield count
    finally:
        _scope.depth = depth
        if depth == 0:
            _scope.outside = None
        if torch.get_num_threads() != outside:
            torch.set_num_threads(outside)


def sized_threads(work: Callable[..., float]) -> Callable[[F], F]:
    """Decorate a method so that it runs under [`cpu_threads`] ``(work(self, *args, **kwargs))``.

    ``work`` gets the call's bound arguments by name (``self`` included) and returns FLOP; methods of
    objects whose ``device`` is not a CPU run unchanged.

    Example:
        >>> class Scorer:
        ...     device = torch.device("cpu")
        ...     @sized_threads(lambda self, x: 2.0 * x.numel() * x.shape[-1])
        ...     def gram(self, x):
        ...         return x @ x.T
        >>> Scorer().gram(torch.ones(2, 3))
        tensor([[3., 3.],
                [3., 3.]])
    """

    def decorate(method: F) -> F:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            device = getattr(self, "device", None)
            if device is not None and torch.device(device).type != "cpu":
                return method(self, *args, **kwargs)
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            with cpu_threads(work(**bound.arguments)):
                return method(self, *args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


_SCRATCH = threading.local()
SCRATCH_LIMIT_BYTES = 256 * 2**20  # larger buffers are allocated afresh each time, not kept


def scratch(
    name: str, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` to pass as a kernel's ``out=``, reused on CPU.

    On CPU a freshly allocated buffer of tens of MB costs more than the work written into it: freed
    buffers that large go back to the OS, so every call page-faults them in again (converting 73k x 128
    float16 vectors: 25 ms into a new tensor, 3 ms into a reused one). Each thread keeps one buffer per
    ``name`` and dtype, grown to the largest size asked up to ``SCRATCH_LIMIT_BYTES``; its contents are
    valid until the next call with the same name in the same thread, so a result returned to a caller
    must not live in one. Larger shapes, and other devices (whose allocators cache), get a new tensor.

    Example:
        >>> first = scratch("example", (2, 3), torch.device("cpu"))
        >>> scratch("example", (3, 2), torch.device("cpu")).data_ptr() == first.data_ptr()
        True
    """
    size = math.prod(shape)
    if device.type != "cpu" or size * dtype.itemsize > SCRATCH_LIMIT_BYTES:
        return torch.empty(shape, device=device, dtype=dtype)
    buffers, key = _SCRATCH.__dict__, (name, dtype)
    if key not in buffers or buffers[key].numel() < size:
        buffers[key] = torch.empty(size, dtype=dtype)
    return buffers[key][:size].view(shape)
