import pytest
import torch

from flmr.index import Index


@pytest.fixture
def index(tmp_path, writer, documents, stored_fields) -> Index:
    return writer.write(tmp_path / "index", documents, documents=stored_fields)


def inverted_lists_are_exact(index: Index) -> bool:
    centroid_ids = index.gather_centroid_ids(torch.arange(index.num_vectors))
    pids = torch.arange(index.num_documents).repeat_interleave(index.doclens)
    expected = torch.unique(centroid_ids * index.num_documents + pids)
    lengths = torch.from_numpy(index.ivf_offsets).diff()
    stored = torch.arange(index.num_partitions).repeat_interleave(lengths) * index.num_documents
    return torch.equal(stored + torch.from_numpy(index.ivf_pids.astype("int64")), expected)


def test_add_continues_pid_numbering_and_updates_inverted_lists(index, make_documents) -> None:
    new_documents = make_documents(325)[300:]  # same topics as the indexed documents
    new_pids = index.add(new_documents, documents=[{"id": f"new-{i}"} for i in range(25)])
    assert new_pids == range(300, 325)
    assert index.num_documents == 325
    assert index.document(310).id == "new-10" and index.document(10).id == "doc-10"
    assert inverted_lists_are_exact(index)
    reloaded = Index.load(index.path)
    assert reloaded.num_documents == 325 and reloaded.generation == 1
    vectors, _ = reloaded.decompress(torch.tensor([320]))
    assert (vectors * new_documents[20]).sum(1).mean() > 0.9  # compressed with the existing codec


def test_add_accepts_flat_embeddings_and_keeps_the_codec(index, make_documents) -> None:
    centroids_before = index.codec.centroids.clone()
    new_documents = make_documents(5, seed=8)
    index.add(torch.cat(new_documents), torch.tensor([len(d) for d in new_documents]))
    assert torch.equal(index.codec.centroids, centroids_before)
    assert index.num_documents == 305 and len(index.manifest["segments"]) == 2


def test_add_rejects_wrong_dim(index) -> None:
    with pytest.raises(ValueError, match="dim 8, the index has dim 16"):
        index.add([torch.randn(3, 8)])
    assert Index.load(index.path).num_documents == 300


def test_interrupted_add_leaves_the_index_unchanged(index, make_documents) -> None:
    def crashing():
        yield make_documents(5, seed=9)
        raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        index.add(crashing())
    reloaded = Index.load(index.path)
    assert reloaded.num_documents == 300 and reloaded.generation == 0
    index.add(make_documents(3, seed=10))  # cleans the leftover segment and works
    assert len(list((index.path / "segments").iterdir())) == 2


def test_delete_marks_tombstones_atomically(index) -> None:
    index.delete([3, 17])
    index.delete(torch.tensor([17, 250]))
    reloaded = Index.load(index.path)
    assert reloaded.deleted_pids.tolist() == [3, 17, 250]
    assert reloaded.manifest["counts"]["num_deleted"] == 3
    assert reloaded.num_documents == 300  # pids keep their meaning
    superseded = sorted(p.name for p in index.path.glob("deleted.*.npy"))
    assert superseded == ["deleted.2.npy"]


def test_delete_rejects_unknown_pids(index) -> None:
    with pytest.raises(IndexError, match=r"cannot delete pids \[300\]"):
        index.delete([1, 300])
    assert Index.load(index.path).deleted_pids.numel() == 0


def test_updates_leave_foreign_folders_and_remove_stale_files(index, make_documents) -> None:
    (index.path / "cache").mkdir()
    (index.path / "cache" / "bm25.bin").write_bytes(b"kept")
    (index.path / "ivf_pids.99.npy").write_bytes(b"stale")  # as left by an interrupted update
    index.add(make_documents(2, seed=11))
    index.delete([0])
    assert (index.path / "cache" / "bm25.bin").read_bytes() == b"kept"
    assert not (index.path / "ivf_pids.99.npy").exists()


def test_document_centroids_are_each_documents_distinct_centroids(index, make_documents) -> None:
    """Over two segments (a build and an add), in any pid order, documents without vectors included."""
    index.add([*make_documents(310)[300:], torch.empty(0, index.dim)])
    pids = torch.tensor([305, 2, 310, 299, 2, 300])
    centroid_ids, owners = index.document_centroids(pids)
    positions, vector_owners = index.vector_positions(pids)
    every = index.gather_centroid_ids(positions)
    for row in range(len(pids)):
        assert centroid_ids[owners == row].tolist() == sorted(set(every[vector_owners == row].tolist()))
    assert (owners == 2).sum() == 0  # pid 310 has no vectors
    assert len(centroid_ids) < len(every)  # the documents' vectors share centroids
