"""Cross-process locks of an index, on the ``filelock`` library (``flock`` on POSIX).

- The write lock ``.NAME.lock`` (a sibling of the index folder ``NAME``, so it survives the folder being
  replaced by ``--overwrite``) serialises every change: ``add``, ``delete``, ``upsert``, publishing a
  build and recovery. Its holder writes its pid, host, operation and start time into
  ``.NAME.lock.holder``, which a writer that times out quotes in its ``IndexLockedError``.
- A build holds ``.NAME.building-XXXX.lock`` while it fills ``.NAME.building-XXXX``; the operating
  system releases it when the builder dies, so a leftover folder whose lock can be taken belongs to a
  dead build and can be removed, and a running build's folder never is.

The locks are re-entrant within a thread (a writer may publish or recover while holding the lock) and
exclude other threads of the same process as well as other processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from flmr.index.errors import IndexLockedError

DEFAULT_LOCK_TIMEOUT = 60.0  # seconds a writer waits for another to finish
_held = threading.local()  # write-lock paths this thread holds, for re-entry


def write_lock_path(index_path: Path) -> Path:
    """The write-lock file of the index at ``index_path``."""
    index_path = Path(os.path.abspath(index_path))
    return index_path.parent / f".{index_path.name}.lock"


@contextlib.contextmanager
def write_lock(
    index_path: Path, timeout: float = DEFAULT_LOCK_TIMEOUT, operation: str = "write"
) -> Iterator[None]:
    """Hold the write lock of the index at ``index_path`` (waiting up to ``timeout`` seconds).

    Raises ``IndexLockedError`` naming the holder (pid, host, operation, since when) on timeout.
    """
    path = write_lock_path(index_path)
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise IndexLockedError(
            f"timed out after {timeout:g} s waiting for the write lock of {index_path} ({path}): "
            f"{_describe_holder(path)}; try again later or pass a longer lock_timeout"
        ) from None
    holder = _holder_path(path)
    held.add(path)
    try:
        holder.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "operation": operation,
                    "since": time.time(),
                }
            )
        )
        yield
    finally:
        held.discard(path)
        with contextlib.suppress(OSError):
            holder.unlink()
        lock.release()


def _holder_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".holder")


def _describe_holder(lock_path: Path) -> str:
    try:
        holder = json.loads(_holder_path(lock_path).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["since"])))
        return f"held by pid {holder['pid']} on host {holder['host']} ({holder['operation']}) since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its holder did not record itself (it may be starting or finishing)"


class BuildLock:
    """The liveness lock of one build folder, held from before its creation until it is published or removed."""

    def __init__(self, folder: Path) -> None:
        self.path = folder.with_name(folder.name + ".lock")
        self._lock = FileLock(self.path, timeout=0)

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another (live) process holds it."""
        try:
            self._lock.acquire()
        except Timeout:
            return False
        return True

    def release(self) -> None:
        """Release and remove the lock file."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._lock.release()
