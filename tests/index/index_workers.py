"""Processes for the multi-process index tests, run as ``python index_workers.py ROLE ARGS...``.

- ``writer PATH WRITER NUM_ADDS``: adds NUM_ADDS batches through one handle opened at the start
  (so it is stale after other writers' commits);
- ``reader PATH STOP_FILE``: searches and reads documents until STOP_FILE exists, half the time through a
  refreshed long-lived handle and half through a freshly loaded one; prints the iteration count;
- ``add PATH``, ``build PATH``: one add / one overwriting build, for the crash tests (``$FLMR_TEST_CRASH_AT``).
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_fixtures import clustered_documents  # noqa: E402
from flmr.index import Index, IndexWriter  # noqa: E402
from flmr.search import PlaidSearcher  # noqa: E402

DOCS_PER_ADD = 2


def batch(writer: int, number: int) -> tuple[list[torch.Tensor], list[dict]]:
    """The documents of a writer's batch: deterministic, so a test can apply the same batches again."""
    vectors = clustered_documents(DOCS_PER_ADD, seed=1000 * (writer + 1) + number)
    return vectors, [
        {"id": f"w{writer}-{number}-{j}", "text": f"batch {writer}/{number}"} for j in range(DOCS_PER_ADD)
    ]


def run_writer(path: str, writer: int, num_adds: int) -> None:
    index = Index.load(path, auto_refresh=None)
    for number in range(num_adds):
        vectors, documents = batch(writer, number)
        index.add(vectors, documents=documents)


def run_reader(path: str, stop_file: str) -> None:
    queries = clustered_documents(2, seed=77)
    kept = Index.load(path, auto_refresh=0.0)
    iterations = last_documents = 0
    while not Path(stop_file).exists():
        if iterations % 2:
            index = Index.load(path)
        else:
            kept.refresh_if_due()
            index = kept
            assert index.num_documents >= last_documents, "a refreshed handle went back in time"
            last_documents = index.num_documents
        for query in queries:
            for hit in PlaidSearcher(index).search(query, k=5, return_documents=True)[0]:
                assert 0 <= hit.pid < index.num_documents and not index.deleted[hit.pid]
                assert hit.document.id is not None and index.pid_of(hit.document.id) == hit.pid
        iterations += 1
        time.sleep(0.005)  # leave the writers some CPU on a small machine
    print(iterations)


def run_build(path: str) -> None:
    documents = clustered_documents(40, seed=5)
    IndexWriter(nbits=2, num_partitions=16, kmeans_iterations=4).write(
        path, documents, documents=[{"id": f"new-{i}"} for i in range(40)], overwrite=True
    )


if __name__ == "__main__":
    role, path, *rest = sys.argv[1:]
    if role == "writer":
        run_writer(path, int(rest[0]), int(rest[1]))
    elif role == "reader":
        run_reader(path, rest[0])
    elif role == "add":
        vectors, documents = batch(9, 0)
        Index.load(path).add(vectors, documents=documents)
    elif role == "build":
        run_build(path)
    else:
        raise SystemExit(f"unknown role {role}")
