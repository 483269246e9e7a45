"""Several writers and readers on one index: serialised writes, snapshots, recovery after kills."""

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from index_workers import DOCS_PER_ADD, batch

from flmr.index import Index, IndexLockedError, IndexWriter
from flmr.index.locking import write_lock
from flmr.index.storage import CRASH_ENV, MANIFEST_NAME, discard_build_folder, new_build_folder, recover

WORKERS = Path(__file__).with_name("index_workers.py")
NUM_WRITERS, NUM_ADDS, NUM_READERS = 4, 10, 2


@pytest.fixture
def small_index(tmp_path, make_documents) -> Index:
    documents = make_documents(60, seed=3)
    return IndexWriter(nbits=2, num_partitions=16, kmeans_iterations=4).write(
        tmp_path / "index", documents, documents=[{"id": f"doc-{i}"} for i in range(60)]
    )


def start(role: str, *args: object, crash_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, CRASH_ENV: crash_at or ""}
    return subprocess.Popen(
        [sys.executable, str(WORKERS), role, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return out


def unreferenced_files(index: Index) -> list[str]:
    """Files and segment folders in the index folder that its manifest does not name."""
    named = {MANIFEST_NAME, *index.manifest["files"].values()}
    segments = {Path(s["folder"]).name for s in index.manifest["segments"]}
    found = [p.name for p in index.path.iterdir() if p.is_file() and p.name not in named]
    return found + [p.name for p in (index.path / "segments").iterdir() if p.name not in segments]


def all_ids(index: Index) -> list:
    return [index.document(pid).id for pid in range(index.num_documents)]


def test_concurrent_writers_and_readers(small_index, tmp_path) -> None:
    initial = tmp_path / "initial"
    shutil.copytree(small_index.path, initial)
    stop = tmp_path / "stop"
    readers = [start("reader", small_index.path, stop) for _ in range(NUM_READERS)]
    writers = [start("writer", small_index.path, w, NUM_ADDS) for w in range(NUM_WRITERS)]
    for writer in writers:
        finish(writer)
    stop.touch()
    iterations = [int(finish(reader)) for reader in readers]
    assert all(count > 0 for count in iterations)
    print(f"reader iterations (each: load or refresh, 2 searches, document reads): {iterations}")

    final = Index.load(small_index.path)
    ids = all_ids(final)
    expected = {
        f"w{w}-{n}-{j}" for w in range(NUM_WRITERS) for n in range(NUM_ADDS) for j in range(DOCS_PER_ADD)
    }
    assert len(ids) == 60 + len(expected) and set(ids[60:]) == expected  # nothing lost or repeated
    assert final.generation == NUM_WRITERS * NUM_ADDS and not unreferenced_files(final)

    # the same batches applied one after another, in the order they were committed
    serial = Index.load(initial)
    for first_pid in range(60, final.num_documents, DOCS_PER_ADD):
        writer, number, _ = ids[first_pid][1:].split("-")
        vectors, documents = batch(int(writer), int(number))
        serial.add(vectors, documents=documents)
    assert all_ids(serial) == ids
    everything = torch.arange(final.num_vectors)
    assert torch.equal(serial.doclens, final.doclens)
    assert torch.equal(serial.gather_codes(everything), final.gather_codes(everything))
    assert torch.equal(serial.gather_centroid_ids(everything), final.gather_centroid_ids(everything))
    assert np.array_equal(serial.ivf_offsets, final.ivf_offsets)
    assert np.array_equal(serial.ivf_pids, final.ivf_pids)


def test_threads_with_their_own_handles_are_serialised(small_index) -> None:
    def add_batches(writer: int) -> None:
        handle = Index.load(small_index.path)
        for number in range(3):
            vectors, documents = batch(writer, number)
            handle.add(vectors, documents=documents)

    threads = [threading.Thread(target=add_batches, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reloaded = Index.load(small_index.path)
    assert reloaded.num_documents == 60 + 2 * 3 * DOCS_PER_ADD and reloaded.generation == 6
    assert len(set(all_ids(reloaded))) == reloaded.num_documents


def test_stale_handles_write_on_top_of_the_newest_generation(small_index, make_documents) -> None:
    first, stale = Index.load(small_index.path), Index.load(small_index.path)
    first.add(make_documents(2, seed=21), documents=[{"id": "a"}, {"id": "b"}])
    assert list(stale.add(make_documents(1, seed=22), documents=[{"id": "c"}])) == [62]  # not 60
    stale_again = Index.load(small_index.path)
    first.add(make_documents(1, seed=23), documents=[{"id": "d"}])
    stale_again.delete([61])  # after another handle's add: keeps it
    reloaded = Index.load(small_index.path)
    assert all_ids(reloaded)[60:] == ["a", "b", "c", "d"]
    assert reloaded.deleted_pids.tolist() == [61] and not unreferenced_files(reloaded)


def test_a_handle_refreshes_to_the_newest_generation_and_keeps_its_snapshot(
    small_index, make_documents
) -> None:
    reader = Index.load(small_index.path)
    pinned = reader.snapshot()
    Index.load(small_index.path).add(
        make_documents(3, seed=24), documents=[{"id": f"n{i}"} for i in range(3)]
    )
    Index.load(small_index.path).delete([0])
    assert reader.num_documents == 60 and not reader.refresh(if_older_than=3600)
    assert reader.refresh() and reader.num_documents == 63 and bool(reader.deleted[0])
    assert not reader.refresh()  # nothing new: one stat
    # the pinned snapshot still reads generation 0, although its ivf and deleted files were removed
    assert pinned.generation == 0 and pinned.num_documents == 60 and not bool(pinned.deleted[0])
    assert not (small_index.path / pinned.manifest["files"]["deleted"]).exists()
    assert pinned.candidate_pids(torch.arange(pinned.num_partitions)).numel() == 60
    assert pinned.document(5).id == "doc-5"


def test_a_writer_that_cannot_get_the_lock_names_its_holder(small_index, make_documents) -> None:
    errors = []

    def add() -> None:
        handle = Index.load(small_index.path, lock_timeout=0.2)
        try:
            handle.add(make_documents(1, seed=25))
        except IndexLockedError as error:
            errors.append(str(error))

    with write_lock(small_index.path, operation="maintenance"):
        thread = threading.Thread(target=add)
        thread.start()
        thread.join()
    assert len(errors) == 1
    assert f"pid {os.getpid()}" in errors[0] and "(maintenance)" in errors[0] and "lock_timeout" in errors[0]
    assert Index.load(small_index.path).num_documents == 60


@pytest.mark.parametrize(
    ("phase", "committed"), [("segment-written", False), ("files-written", False), ("manifest-written", True)]
)
def test_an_add_killed_at_each_phase(small_index, phase, committed) -> None:
    process = start("add", small_index.path, crash_at=phase)
    process.communicate(timeout=300)
    assert process.returncode == -9  # SIGKILL
    reloaded = Index.load(small_index.path)
    assert reloaded.num_documents == (60 + DOCS_PER_ADD if committed else 60)
    assert reloaded.generation == int(committed)
    reloaded.delete([1])  # the next write cleans what the killed one left
    assert not unreferenced_files(reloaded)
    assert Index.load(small_index.path).generation == int(committed) + 1


@pytest.mark.parametrize(
    ("phase", "new_index"),
    [("build-written", False), ("overwrite-retired", False), ("overwrite-published", True)],
)
def test_an_overwriting_build_killed_at_each_phase(small_index, phase, new_index) -> None:
    process = start("build", small_index.path, crash_at=phase)
    process.communicate(timeout=300)
    assert process.returncode == -9
    parent = small_index.path.parent
    assert any(p.name.startswith(".index.") and ".lock" not in p.name for p in parent.iterdir())  # leftovers
    reloaded = Index.load(small_index.path)  # restores the older index if the kill left none
    assert reloaded.num_documents == (40 if new_index else 60)
    reloaded.delete([0])  # every write (and build) first removes what dead writers left
    leftovers = [
        p.name for p in parent.iterdir() if p.name.startswith(".index.") and not p.name.endswith(".lock")
    ]
    assert leftovers == []


def test_recovery_never_removes_a_running_build(small_index) -> None:
    folder = new_build_folder(small_index.path, overwrite=True)
    try:
        (folder / "partial.npy").write_bytes(b"in progress")
        recover(small_index.path)
        assert (folder / "partial.npy").exists()
    finally:
        discard_build_folder(folder)
    assert not folder.exists()
