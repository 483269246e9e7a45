"""Cost of safe sharing: add and search latency with the write lock, snapshots and checksums, and without.

One run, one index, interleaved trials (A B A B ...) so machine noise hits both sides alike:

- add: ``Index.add`` of a small batch as shipped (write lock, re-reading the newest manifest before
  writing, recovery check, checksums of the new files) against the same add with the lock, the
  re-read and recovery removed, and against the same add with checksums removed as well;
- search: PLAID search of one query through a handle that checks for a newer generation before every
  search (``auto_refresh=0``, the worst case: one ``stat`` per search) against one that never checks;
- load: ``Index.load`` with and without the checksum check of the small files.

The "without" variants are made in this script only (by patching the functions out); the library
has no unsafe mode. Prints medians in ms, their ratios and the trial counts.

Run: python benchmarks/index_concurrency.py [--documents 5000] [--trials 30]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from synthetic import SyntheticCollection

import flmr.index.index as index_module
import flmr.index.segments as segments_module
from flmr.index import Index, IndexWriter
from flmr.index.locking import write_lock
from flmr.index.storage import recover
from flmr.search import PlaidSearcher


@contextlib.contextmanager
def without_locking() -> Iterator[None]:
    """Index writes without the write lock, the re-read of the newest manifest and the recovery check."""

    @contextlib.contextmanager
    def plain_writing(self: Index, operation: str) -> Iterator[None]:
        yield

    original = Index._writing
    Index._writing = plain_writing  # type: ignore[method-assign]
    try:
        yield
    finally:
        Index._writing = original  # type: ignore[method-assign]


@contextlib.contextmanager
def without_checksums() -> Iterator[None]:
    originals = index_module.checksummed_files, segments_module.check_small_file
    index_module.checksummed_files = lambda folder, relatives: {}
    segments_module.check_small_file = lambda *args: None
    try:
        yield
    finally:
        index_module.checksummed_files, segments_module.check_small_file = originals


def interleaved(variants: dict[str, Callable[[], None]], trials: int) -> dict[str, float]:
    """Median seconds of each variant over ``trials`` rounds, the variants alternating within a round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():  # warm-up, not timed
        run()
    for _ in range(trials):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def timed_median(run: Callable[[], object], trials: int) -> float:
    durations = []
    for _ in range(trials):
        started = time.perf_counter()
        run()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def report(title: str, medians: dict[str, float], baseline: str, trials: int) -> None:
    base = medians[baseline]
    cells = ", ".join(
        f"{name} {seconds * 1000:.2f} ms ({seconds / base:.2f}x)" for name, seconds in medians.items()
    )
    print(f"{title} (median of {trials} trials): {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--batch", type=int, default=10, help="documents per add")
    args = parser.parse_args()
    print(f"load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    collection = SyntheticCollection(args.documents, mean_length=30, dim=128)
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "index"
        IndexWriter(nbits=2).write(
            path, collection.chunks(docs_per_chunk=1000), expected_num_vectors=args.documents * 30
        )
        index = Index.load(path)
        print(
            f"index: {index.num_documents} documents, {index.num_vectors} vectors, {index.num_partitions} partitions"
        )
        batches = SyntheticCollection(args.batch * (args.trials + 1) * 3, mean_length=30, dim=128, seed=1)
        extra = iter(list(batches.chunks(args.batch)))  # generated before timing

        def add() -> None:
            index.add(iter([next(extra)]))

        def add_unlocked() -> None:
            with without_locking():
                add()

        def add_bare() -> None:
            with without_locking(), without_checksums():
                add()

        medians = interleaved(
            {"shipped": add, "no lock/re-read": add_unlocked, "no lock/re-read/checksums": add_bare},
            args.trials,
        )
        report(f"add of {args.batch} documents", medians, "no lock/re-read", args.trials)

        def take_lock() -> None:
            with write_lock(path):
                pass

        lock_seconds = timed_median(take_lock, args.trials)
        recover_seconds = timed_median(lambda: recover(path), args.trials)
        print(
            f"  of which: write lock taken and released {lock_seconds * 1000:.2f} ms, "
            f"recovery check {recover_seconds * 1000:.2f} ms (median of {args.trials})"
        )

        queries = collection.queries(args.trials, length=32)
        following, pinned = Index.load(path, auto_refresh=0.0), Index.load(path, auto_refresh=None)
        position = iter(range(10**9))

        def search(handle: Index) -> Callable[[], None]:
            def run() -> None:
                handle.refresh_if_due()  # what Retriever does at the start of every call
                PlaidSearcher(handle).search(queries[next(position) % len(queries)], k=10)

            return run

        medians = interleaved(
            {"refresh check per search": search(following), "no refresh": search(pinned)}, args.trials
        )
        report("PLAID search of one query", medians, "no refresh", args.trials)
        refresh_seconds = timed_median(following.refresh, args.trials)
        print(
            f"  of which: one refresh check with nothing new {refresh_seconds * 1e6:.1f} us (median of {args.trials})"
        )

        def load_checked() -> None:
            Index.load(path)

        def load_unchecked() -> None:
            with without_checksums():
                Index.load(path)

        medians = interleaved(
            {"with small-file checksums": load_checked, "without": load_unchecked}, args.trials
        )
        report(f"Index.load ({len(index.manifest['segments'])} segments)", medians, "without", args.trials)


if __name__ == "__main__":
    main()
