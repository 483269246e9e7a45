"""ShardedIndex: the shards.json format, the global pid layout, documents, refresh and add to the last shard."""

import json
import shutil
import threading

import pytest

from engine_fixtures import write_shards
from flmr.index import (
    DuplicateIdError,
    Index,
    IndexExistsError,
    IndexFormatError,
    IndexInputError,
    IndexLockedError,
    IndexWriter,
    ShardedIndex,
    is_sharded_index,
    read_shards_manifest,
    write_sharded_index,
    write_shards_manifest,
)
from flmr.index.locking import write_lock
from flmr.search import ShardedSearcher


@pytest.fixture(scope="module")
def sharded(documents, fields, codec, tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("sharded"), documents, fields, codec)


@pytest.fixture
def writable(documents, fields, codec, tmp_path):
    """A fresh sharded index the test may change (two shards, 60 documents)."""
    return write_shards(tmp_path / "sharded", documents, fields, codec, bounds=[0, 40, 60])


def test_manifest_round_trip(sharded):
    manifest = read_shards_manifest(sharded)
    assert [(s["folder"], s["first_pid"], s["num_documents"]) for s in manifest["shards"]] == [
        ("shard-0", 0, 110),
        ("shard-1", 110, 90),
        ("shard-2", 200, 100),
    ]
    ids = [Index.load(sharded / s["folder"]).manifest["index_id"] for s in manifest["shards"]]
    assert [s["index_id"] for s in manifest["shards"]] == ids and len(set(ids)) == 3
    assert manifest["num_documents"] == 300 and manifest["note"] == "three shards"
    index = ShardedIndex.load(sharded)
    assert is_sharded_index(sharded) and not is_sharded_index(sharded / "shard-0")
    assert index.path == sharded and index.num_shards == 3 and index.offsets == [0, 110, 200]
    assert index.num_documents == 300 and index.dim == 16
    assert [s.path for s in index.shards] == [sharded / f"shard-{n}" for n in range(3)]


def corrupt(manifest, change):
    if change == "format":
        manifest["format"] = "something-else"
    elif change == "version":
        manifest["format_version"] = 99
    elif change == "outside":
        manifest["shards"][1]["folder"] = "../shard-1"
    elif change == "first_pid":
        manifest["shards"][2]["first_pid"] = 201
    elif change == "total":
        manifest["num_documents"] = 301
    elif change == "negative":
        manifest["shards"][0]["num_documents"] = -1
    elif change == "empty":
        manifest["shards"] = []
    return manifest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("format", "is not a flmr-sharded-index manifest"),
        ("version", "format version 99"),
        ("outside", "not a folder inside"),
        ("first_pid", "first_pid 201 disagrees"),
        ("total", "'num_documents' is 301"),
        ("negative", "needs a folder and counts"),
        ("empty", "non-empty list"),
    ],
)
def test_a_malformed_manifest_is_refused_by_name(sharded, tmp_path, change, message):
    copy = tmp_path / "copy"
    copy.mkdir()
    manifest = corrupt(json.loads((sharded / "shards.json").read_text()), change)
    (copy / "shards.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=message):
        read_shards_manifest(copy)


def test_a_manifest_that_is_not_json_or_missing_is_refused(tmp_path):
    with pytest.raises(IndexFormatError, match="has no shards.json"):
        read_shards_manifest(tmp_path)
    (tmp_path / "shards.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        ShardedIndex.load(tmp_path)


def linked_copy(sharded, destination, manifest):
    """A sharded folder whose shards link to ``sharded``'s, with the given manifest."""
    destination.mkdir()
    for entry in json.loads((sharded / "shards.json").read_text())["shards"]:
        (destination / entry["folder"]).symlink_to(sharded / entry["folder"])
    (destination / "shards.json").write_text(json.dumps(manifest))
    return destination


def test_a_manifest_that_disagrees_with_its_shards_is_refused(sharded, tmp_path):
    manifest = json.loads((sharded / "shards.json").read_text())
    bigger = json.loads(json.dumps(manifest))
    bigger["shards"][0]["num_documents"] = 111
    for entry in bigger["shards"][1:]:
        entry["first_pid"] += 1
    bigger["num_documents"] += 1
    with pytest.raises(IndexFormatError, match="disagree"):
        ShardedIndex.load(linked_copy(sharded, tmp_path / "bigger", bigger))
    rebuilt = json.loads(json.dumps(manifest))
    rebuilt["shards"][1]["index_id"] = "0" * 32
    with pytest.raises(IndexFormatError, match="shard 1 .* is not the build it records"):
        ShardedIndex.load(linked_copy(sharded, tmp_path / "rebuilt", rebuilt))


def test_locate_at_shard_boundaries(sharded):
    index = ShardedIndex.load(sharded)
    assert [index.locate(pid) for pid in (0, 109, 110, 199, 200, 299)] == [
        (0, 0),
        (0, 109),
        (1, 0),
        (1, 89),
        (2, 0),
        (2, 99),
    ]
    for pid in (-1, 300):
        with pytest.raises(IndexError, match=f"pid {pid} out of range: the sharded index has 300"):
            index.locate(pid)


def test_documents_and_ids_across_shards(sharded):
    index = ShardedIndex.load(sharded)
    assert [index.document(pid).id for pid in (0, 109, 110, 250, 299)] == [
        f"doc-{pid}" for pid in (0, 109, 110, 250, 299)
    ]
    assert [index.pid_of(f"doc-{pid}") for pid in (0, 110, 199, 200, 299)] == [0, 110, 199, 200, 299]
    assert index.pid_of("no-such-document") is None
    assert index.deleted.shape == (300,) and not index.deleted.any()


def test_a_list_of_shards_and_a_single_index(sharded):
    listed = ShardedIndex.load([sharded / "shard-0", Index.load(sharded / "shard-1")])
    assert listed.path is None and listed.offsets == [0, 110] and listed.num_documents == 200
    assert listed.document(150).id == "doc-150"
    single = ShardedIndex.load(sharded / "shard-2")
    assert single.num_shards == 1 and single.offsets == [0] and single.document(0).id == "doc-200"
    assert ShardedIndex.load(listed) is listed
    with pytest.raises(IndexInputError, match="at least one shard"):
        ShardedIndex.load([])


def test_shards_with_another_codec_are_refused(sharded, documents, tmp_path):
    other = IndexWriter(nbits=2, num_partitions=16, kmeans_iterations=4, show_progress=False).write(
        tmp_path / "other", documents[:50]
    )
    with pytest.raises(IndexFormatError, match=r"shard 1 \(.*other\) has another codec"):
        ShardedIndex.load([sharded / "shard-0", other.path])
    shutil.copytree(sharded / "shard-0", tmp_path / "mixed" / "a")
    shutil.copytree(other.path, tmp_path / "mixed" / "b")
    with pytest.raises(IndexFormatError, match="another codec"):
        write_shards_manifest(tmp_path / "mixed", ["a", "b"])


def test_add_appends_to_the_last_shard_and_records_it(writable, documents):
    index = ShardedIndex.load(writable)
    other = ShardedIndex.load(writable)
    searcher = ShardedSearcher(index, exact=True)  # built before the add: it searches the same shards
    generation = index.generation
    new = index.add(documents[200:203], documents=[{"id": f"new-{n}"} for n in range(3)])
    assert new == range(60, 63) and index.num_documents == 63 and index.offsets == [0, 40]
    assert index.shards[0].num_documents == 40 and index.shards[1].num_documents == 23
    assert index.generation == generation + 1
    assert index.document(61).id == "new-1" and index.pid_of("new-2") == 62
    manifest = read_shards_manifest(writable)
    assert [s["num_documents"] for s in manifest["shards"]] == [40, 23] and manifest["num_documents"] == 63
    assert manifest["note"] == "three shards"  # extra fields survive the update
    assert other.num_documents == 60 and other.refresh() and other.num_documents == 63
    reloaded = ShardedIndex.load(writable)
    assert reloaded.num_documents == 63 and reloaded.document(62).id == "new-2"
    # the added documents are searchable at their global pids, by new searchers and the one built before
    for sharded_searcher in (searcher, ShardedSearcher(reloaded, exact=True)):
        assert sharded_searcher.search(documents[201][None, :4], k=1)[0][0].pid == 61


def test_add_refuses_an_id_of_another_shard_and_writes_nothing(writable, documents):
    index = ShardedIndex.load(writable)
    generation = index.generation
    with pytest.raises(DuplicateIdError, match="'doc-3' is already in shard 0 .* global pid 3"):
        index.add(documents[:2], documents=[{"id": "fresh"}, {"id": "doc-3"}])
    with pytest.raises(DuplicateIdError, match="'doc-50' is already in the index"):
        index.add(documents[:1], documents=[{"id": "doc-50"}])  # the last shard's own check
    assert index.generation == generation and ShardedIndex.load(writable).num_documents == 60


def test_delete_by_global_pid_across_shards(writable):
    index = ShardedIndex.load(writable)
    index.delete([3, 45])
    reloaded = ShardedIndex.load(writable)
    assert reloaded.deleted.nonzero().flatten().tolist() == [3, 45]
    assert not reloaded.is_live(45) and reloaded.is_live(44) and reloaded.pid_of("doc-3") is None
    assert reloaded.shards[1].deleted_pids.tolist() == [5]
    with pytest.raises(IndexError, match="pid 60 out of range"):
        index.delete([1, 60])
    assert ShardedIndex.load(writable).deleted.sum() == 2  # nothing of the refused call was deleted


def test_the_last_shard_may_outgrow_its_record_but_no_other(writable, documents):
    index = ShardedIndex.load(writable)
    # an add committed to the last shard whose shards.json update did not happen (a crash between them)
    Index.load(writable / "shard-1").add(documents[100:102], documents=[{"id": "a"}, {"id": "b"}])
    assert ShardedIndex.load(writable).num_documents == 62 and index.refresh() and index.pid_of("b") == 61
    assert ShardedIndex.load(writable).add(documents[102:103]) == range(62, 63)
    assert [s["num_documents"] for s in read_shards_manifest(writable)["shards"]] == [40, 23]
    # growing an earlier shard would move every later pid: refused on refresh and on load
    Index.load(writable / "shard-0").add(documents[103:104])
    with pytest.raises(IndexFormatError, match="shards other than the last changed size"):
        index.refresh()
    with pytest.raises(IndexFormatError, match="disagree"):
        ShardedIndex.load(writable)


def test_write_sharded_index_publishes_complete_folders_only(sharded, documents, codec, tmp_path):
    def write(paths):
        for path, start in zip(paths, (0, 30, 60), strict=False):
            IndexWriter(nbits=2, codec=codec, show_progress=False).write(path, documents[start : start + 30])

    path = write_sharded_index(tmp_path / "two", 2, write, note="x")
    index = ShardedIndex.load(path)
    assert index.offsets == [0, 30] and read_shards_manifest(path)["note"] == "x"
    one = write_sharded_index(tmp_path / "one", 1, write)
    assert not is_sharded_index(one) and Index.load(one).num_documents == 30
    with pytest.raises(IndexExistsError, match="already exists"):
        write_sharded_index(path, 3, write)

    def fail(paths):
        write(paths[:1])
        raise RuntimeError("shard 1 failed")

    with pytest.raises(RuntimeError, match="shard 1 failed"):
        write_sharded_index(tmp_path / "failed", 2, fail)
    assert [p.name for p in tmp_path.iterdir() if "failed" in p.name and not p.name.endswith(".lock")] == []
    path = write_sharded_index(tmp_path / "two", 3, write, overwrite=True)
    assert ShardedIndex.load(path).offsets == [0, 30, 60]


def test_concurrent_adds_through_separate_handles_are_serialised(writable, documents):
    handles = [ShardedIndex.load(writable) for _ in range(3)]
    results = {}

    def add(number):
        fields = [{"id": f"thread-{number}-{n}"} for n in range(2)]
        results[number] = handles[number].add(
            documents[210 + 2 * number : 212 + 2 * number], documents=fields
        )

    threads = [threading.Thread(target=add, args=(number,)) for number in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(pid for pids in results.values() for pid in pids) == list(range(60, 66))
    reloaded = ShardedIndex.load(writable)
    assert [s["num_documents"] for s in read_shards_manifest(writable)["shards"]] == [40, 26]
    for number, pids in results.items():
        assert [reloaded.document(pid).id for pid in pids] == [f"thread-{number}-{n}" for n in range(2)]


def test_add_waits_for_the_sharded_folders_write_lock(writable, documents):
    handle = ShardedIndex.load(writable, lock_timeout=0.3)
    errors = []

    def add():
        try:
            handle.add(documents[:1], documents=[{"id": "late"}])
        except IndexLockedError as error:
            errors.append(error)

    with write_lock(writable, operation="test"):  # another writer of the sharded index holds it
        thread = threading.Thread(target=add)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "(test)" in str(errors[0])
    assert ShardedIndex.load(writable).num_documents == 60 and handle.pid_of("late") is None
