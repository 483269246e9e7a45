import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flmr.index import (
    DocumentChunk,
    Index,
    IndexExistsError,
    IndexFormatError,
    IndexWriter,
    StoredDocument,
    train_codec,
)
from flmr.index.storage import new_build_folder


def brute_force_inverted_lists(index: Index) -> dict[int, list[int]]:
    positions = torch.arange(index.num_vectors)
    centroid_ids = index.gather_centroid_ids(positions)
    pids = torch.arange(index.num_documents).repeat_interleave(index.doclens)
    lists: dict[int, set[int]] = {}
    for centroid, pid in zip(centroid_ids.tolist(), pids.tolist(), strict=True):
        lists.setdefault(centroid, set()).add(pid)
    return {centroid: sorted(members) for centroid, members in lists.items()}


def stored_inverted_lists(index: Index) -> dict[int, list[int]]:
    lists = {}
    for centroid in range(index.num_partitions):
        members = index.ivf_pids[index.ivf_offsets[centroid] : index.ivf_offsets[centroid + 1]].tolist()
        if members:
            lists[centroid] = members
    return lists


def test_written_index_has_expected_counts_and_manifest(tmp_path, writer, documents) -> None:
    index = writer.write(tmp_path / "index", documents, encoder={"checkpoint": "tiny", "sha": "abc"})
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["encoder"] == {"checkpoint": "tiny", "sha": "abc"}
    assert manifest["settings"]["nbits"] == 2 and manifest["settings"]["dim"] == 16
    assert manifest["settings"]["num_partitions"] == 32
    assert manifest["counts"]["num_documents"] == 300
    assert manifest["counts"]["num_vectors"] == sum(len(d) for d in documents)
    assert index.num_documents == 300 and index.dim == 16 and index.encoder["sha"] == "abc"
    assert torch.equal(index.doclens, torch.tensor([len(d) for d in documents]))


def test_inverted_lists_match_brute_force(tmp_path, writer, documents) -> None:
    index = writer.write(tmp_path / "index", documents)
    assert stored_inverted_lists(index) == brute_force_inverted_lists(index)


def test_stored_vectors_decompress_close_to_originals(tmp_path, documents) -> None:
    index = IndexWriter(nbits=4, num_partitions=32, kmeans_iterations=8).write(tmp_path / "index", documents)
    vectors, owners = index.decompress(torch.tensor([0, 7]))
    original = torch.cat([documents[0], documents[7]])
    assert torch.equal(owners, torch.tensor([0] * len(documents[0]) + [1] * len(documents[7])))
    cosines = (vectors * original).sum(1)
    assert cosines.mean() > 0.97 and cosines.min() > 0.9


def test_default_partitions_use_four_times_colbert_heuristic_capped_by_sample(tmp_path, documents) -> None:
    index = IndexWriter(kmeans_iterations=4).write(tmp_path / "index", documents[:20])
    num_vectors = (
        index.num_vectors
    )  # 64 * sqrt(~300) = ~1109 -> 1024 requested, capped by the training sample
    assert index.settings["requested_num_partitions"] == 1024
    assert index.num_partitions == min(1024, num_vectors - max(1, num_vectors // 10))


@pytest.mark.parametrize("form", ["list", "flat", "chunk_stream", "pair_stream", "list_stream"])
def test_every_input_form_gives_the_same_documents(tmp_path, writer, documents, stored_fields, form) -> None:
    flat, doclens = torch.cat(documents), torch.tensor([len(d) for d in documents])
    if form == "list":
        index = writer.write(tmp_path / "index", documents, documents=stored_fields)
    elif form == "flat":
        index = writer.write(tmp_path / "index", flat, doclens, documents=stored_fields)
    elif form == "chunk_stream":
        chunks = (
            DocumentChunk(torch.cat(documents[i : i + 70]), doclens[i : i + 70], stored_fields[i : i + 70])
            for i in range(0, 300, 70)
        )
        index = writer.write(tmp_path / "index", chunks)
    elif form == "pair_stream":
        index = writer.write(
            tmp_path / "index",
            ((torch.cat(documents[i : i + 70]), doclens[i : i + 70]) for i in range(0, 300, 70)),
        )
    else:
        index = writer.write(tmp_path / "index", (documents[i : i + 70] for i in range(0, 300, 70)))
    assert index.num_documents == 300
    assert torch.equal(index.doclens, doclens)
    assert stored_inverted_lists(index) == brute_force_inverted_lists(index)
    if form in ("list", "flat", "chunk_stream"):
        assert index.document(123) == StoredDocument("doc-123", "text of 123", "images/123.jpg", {"n": 123})


def test_documents_are_read_one_at_a_time_from_the_store(tmp_path, writer, documents, stored_fields) -> None:
    index = writer.write(tmp_path / "index", documents, documents=stored_fields)
    assert index.document(0).id == "doc-0"
    assert index.document(299).metadata == {"n": 299}
    with pytest.raises(IndexError, match="pid 300 out of range"):
        index.document(300)


def test_documents_without_stored_fields_have_none(tmp_path, writer, documents) -> None:
    assert writer.write(tmp_path / "index", documents).document(5) == StoredDocument()


def test_arrays_are_memory_mapped(tmp_path, writer, documents) -> None:
    writer.write(tmp_path / "index", documents)
    index = Index.load(tmp_path / "index")
    segment = index._state.segments[0]
    assert isinstance(segment.codes, np.memmap) and isinstance(segment.centroid_ids, np.memmap)
    assert isinstance(index.ivf_pids, np.memmap)
    assert not isinstance(Index.load(tmp_path / "index", mmap=False).ivf_pids, np.memmap)
    for name in ("codes.npy", "centroid_ids.npy", "doclens.npy", "document_offsets.npy"):
        np.load(tmp_path / "index" / "segments" / "000000" / name, mmap_mode="r")


def test_existing_index_is_not_overwritten_by_default(tmp_path, writer, documents) -> None:
    writer.write(tmp_path / "index", documents)
    with pytest.raises(IndexExistsError, match=str(tmp_path / "index")):
        writer.write(tmp_path / "index", documents[:10])
    assert writer.write(tmp_path / "index", documents[:10], overwrite=True).num_documents == 10
    assert Index.load(tmp_path / "index").num_documents == 10


def test_a_folder_that_is_not_an_index_is_never_overwritten(tmp_path, writer, documents) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(IndexExistsError, match="not an index"):
        writer.write(tmp_path / "precious", documents, overwrite=True)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def interrupted(documents: list[torch.Tensor], after: int):
    for start in range(0, len(documents), 50):
        if start >= after:
            raise KeyboardInterrupt("simulated crash")
        yield documents[start : start + 50]


def test_interrupted_build_leaves_nothing_loadable(tmp_path, writer, documents) -> None:
    with pytest.raises(KeyboardInterrupt):
        writer.write(tmp_path / "index", interrupted(documents, after=150))
    assert not (tmp_path / "index").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary build folder is gone too
    with pytest.raises(IndexFormatError, match="does not exist"):
        Index.load(tmp_path / "index")


def test_interrupted_rebuild_keeps_the_old_index(tmp_path, writer, documents) -> None:
    writer.write(tmp_path / "index", documents[:40])
    with pytest.raises(KeyboardInterrupt):
        writer.write(tmp_path / "index", interrupted(documents, after=150), overwrite=True)
    assert Index.load(tmp_path / "index").num_documents == 40


def test_build_folder_without_manifest_does_not_load(tmp_path, writer, documents) -> None:
    writer.write(tmp_path / "index", documents)
    (tmp_path / "index" / "manifest.json").unlink()  # what a crash before the commit point leaves
    with pytest.raises(IndexFormatError, match="no manifest.json"):
        Index.load(tmp_path / "index")


def test_invalid_manifests_are_reported(tmp_path, writer, documents) -> None:
    writer.write(tmp_path / "index", documents)
    manifest_path = tmp_path / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        Index.load(tmp_path / "index")
    manifest_path.write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        Index.load(tmp_path / "index")
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "index" / manifest["files"]["ivf_pids"]).unlink()
    with pytest.raises(IndexFormatError, match="index file missing"):
        Index.load(tmp_path / "index")


def test_documents_with_no_vectors_are_allowed(tmp_path, writer, documents) -> None:
    with_empty = [documents[0], torch.empty(0, 16), *documents[1:]]
    index = writer.write(tmp_path / "index", with_empty)
    assert index.num_documents == 301 and int(index.doclens[1]) == 0
    assert all(1 not in members for members in stored_inverted_lists(index).values())


@pytest.mark.parametrize(
    ("embeddings", "message"),
    [
        ([], "empty collection"),
        ([torch.empty(0, 16), torch.empty(0, 16)], "empty collection"),
        ([torch.randn(4, 16), torch.randn(3, 8)], "document 1 has dim 8"),
        ([torch.randn(4, 16), torch.full((3, 16), float("nan"))], "NaN"),
    ],
)
def test_bad_collections_are_rejected(tmp_path, writer, embeddings, message) -> None:
    with pytest.raises(ValueError, match=message):
        writer.write(tmp_path / "index", embeddings)
    assert not (tmp_path / "index").exists()


def test_mismatched_doclens_are_rejected(tmp_path, writer) -> None:
    with pytest.raises(ValueError, match="doclens"):
        writer.write(tmp_path / "index", torch.randn(10, 16), torch.tensor([4, 4]))


def test_bad_stored_fields_are_rejected(tmp_path, writer, documents) -> None:
    with pytest.raises(ValueError, match="document 2: unknown stored fields"):
        writer.write(tmp_path / "a", documents[:3], documents=[{}, {}, {"title": "x"}])
    with pytest.raises(ValueError, match="document 1: stored fields are not JSON"):
        writer.write(tmp_path / "b", documents[:3], documents=[{}, {"metadata": {"x": object()}}, {}])
    with pytest.raises(ValueError, match="2 stored documents for 3"):
        writer.write(tmp_path / "c", documents[:3], documents=[{}, {}])


def test_unsupported_nbits_is_rejected() -> None:
    with pytest.raises(ValueError, match="nbits must be one of"):
        IndexWriter(nbits=3)


def test_a_long_unsized_stream_asks_for_its_size(tmp_path, monkeypatch, writer, documents) -> None:
    from flmr.index import builder

    monkeypatch.setattr(builder, "MAX_UNSIZED_BUFFER_VECTORS", 500)
    unsized = IndexWriter(nbits=2, kmeans_iterations=4)
    with pytest.raises(ValueError, match="expected_num_vectors"):
        unsized.write(tmp_path / "a", (documents[i : i + 50] for i in range(0, 300, 50)))
    index = unsized.write(
        tmp_path / "b", (documents[i : i + 50] for i in range(0, 300, 50)), expected_num_vectors=4000
    )
    assert index.num_documents == 300
    assert isinstance(Path(index.path), Path)


def test_writers_sharing_a_trained_codec_compress_alike(tmp_path, documents) -> None:
    sample = torch.cat(documents[::3])
    codec = train_codec(sample, nbits=2, num_partitions=32, seed=0)
    whole = IndexWriter(nbits=2, codec=codec).write(tmp_path / "whole", documents)
    first = IndexWriter(nbits=2, codec=codec).write(tmp_path / "first", documents[:120])
    second = IndexWriter(nbits=2, codec=codec).write(tmp_path / "second", documents[120:])
    assert whole.num_partitions == first.num_partitions == 32
    assert whole.settings["kmeans_sample_size"] == 0
    assert torch.equal(Index.load(tmp_path / "whole").codec.centroids, codec.centroids)
    expected, _ = whole.decompress(torch.arange(300))
    shard_vectors = [first.decompress(torch.arange(120))[0], second.decompress(torch.arange(180))[0]]
    assert torch.equal(torch.cat(shard_vectors), expected)


def test_writer_rejects_a_codec_of_other_nbits(documents) -> None:
    codec = train_codec(torch.cat(documents[:50]), nbits=4, num_partitions=16)
    with pytest.raises(ValueError, match="nbits=4"):
        IndexWriter(nbits=2, codec=codec)


def test_build_folder_replaces_only_folders_holding_an_index_marker(tmp_path) -> None:
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "shards.json").write_text("{}")
    with pytest.raises(IndexExistsError, match="not an index"):
        new_build_folder(sharded, overwrite=True)
    folder = new_build_folder(sharded, overwrite=True, index_markers=("manifest.json", "shards.json"))
    assert folder.is_dir() and folder.parent == tmp_path and folder.name.startswith(".sharded.building-")
    with pytest.raises(IndexExistsError, match="pass overwrite=True"):
        new_build_folder(sharded, overwrite=False, index_markers=("shards.json",))
