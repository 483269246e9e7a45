"""build_sharded_index without Ray: shards of an embeddings folder compressed with one codec, searched as one."""

import json

import pytest
import torch

from flmr.distributed import ShardSearchActor, build_sharded_index, shard_bounds
from flmr.distributed.shard_index import train_shared_codec
from flmr.encoding import CollectionError
from flmr.index import Index, IndexExistsError, IndexWriter, ShardedIndex, read_shards_manifest
from flmr.search import ExactSearcher, SearchSettings, ShardedSearcher

NUM_DOCUMENTS = 90


@pytest.fixture(scope="module")
def documents(vector_documents):
    return vector_documents


@pytest.fixture(scope="module")
def embeddings(vector_embeddings):
    return vector_embeddings


@pytest.fixture(scope="module")
def sharded(embeddings, tmp_path_factory):
    output = tmp_path_factory.mktemp("idx") / "sharded"
    return build_sharded_index(
        embeddings, output, num_shards=3, num_partitions=16, kmeans_iterations=4, use_ray=False
    )


def test_shard_bounds_split_evenly():
    assert shard_bounds(10, 3) == [0, 4, 7, 10]
    assert shard_bounds(5, 5) == [0, 1, 2, 3, 4, 5]
    for bad in (0, 6):
        with pytest.raises(ValueError, match="between 1 and the 5 documents"):
            shard_bounds(5, bad)


def test_shards_share_one_codec_and_cover_the_collection_in_order(sharded, embeddings):
    index = ShardedIndex.load(sharded)
    manifest = read_shards_manifest(sharded)
    assert [s["folder"] for s in manifest["shards"]] == ["shard-00000", "shard-00001", "shard-00002"]
    assert [s.num_documents for s in index.shards] == [30, 30, 30] and index.offsets == [0, 30, 60]
    assert (
        manifest["encoder"] == index.encoder == embeddings.encoder()
        and manifest["nbits"] == 2
        and manifest["stores_vectors"]
    )
    codec = train_shared_codec(embeddings, num_partitions=16, kmeans_iterations=4)
    for shard in index.shards:  # the one codec trained on a sample across all parts, in every shard
        assert torch.equal(shard.codec.centroids, codec.centroids)
        assert shard.encoder == {"checkpoint": "a-checkpoint", "digest": "0123abcd"}
    assert [index.document(pid).id for pid in (0, 29, 30, 89)] == ["doc-0", "doc-29", "doc-30", "doc-89"]
    assert index.document(61).metadata == {"n": 61}


@pytest.fixture(scope="module")
def queries(documents):
    generator = torch.Generator().manual_seed(7)
    noisy = [documents[p][:4] + 0.3 * torch.randn(4, 16, generator=generator) for p in (3, 31, 59, 60, 88)]
    return torch.stack([torch.nn.functional.normalize(q, dim=-1) for q in noisy])


def test_exact_sharded_search_equals_a_single_index_with_the_codec(sharded, embeddings, queries, tmp_path):
    codec = Index.load(sharded / "shard-00000").codec
    chunks = embeddings.iter_chunks(0, NUM_DOCUMENTS, docs_per_chunk=40)
    single = IndexWriter(nbits=2, codec=codec, show_progress=False).write(tmp_path / "single", chunks)
    expected = ExactSearcher(single).search(queries, k=15)
    got = ShardedSearcher(sharded, exact=True).search(queries, k=15)
    for want, have in zip(expected, got, strict=True):
        assert [h.pid for h in have] == [h.pid for h in want]
        torch.testing.assert_close(
            torch.tensor([h.score for h in have]), torch.tensor([h.score for h in want]), atol=1e-6, rtol=0
        )


def test_one_shard_is_a_plain_index_and_overwrite_is_explicit(embeddings, tmp_path):
    path = build_sharded_index(embeddings, tmp_path / "one", num_shards=1, num_partitions=16, use_ray=False)
    assert Index.load(path).num_documents == NUM_DOCUMENTS and not (path / "shards.json").exists()
    with pytest.raises(IndexExistsError, match="already exists"):
        build_sharded_index(embeddings, path, num_shards=2, num_partitions=16, use_ray=False)
    build_sharded_index(embeddings, path, num_shards=2, num_partitions=16, use_ray=False, overwrite=True)
    assert ShardedIndex.load(path).offsets == [0, 45]


def test_incomplete_embeddings_are_refused_before_anything_is_written(documents, make_embeddings, tmp_path):
    parts = make_embeddings(tmp_path / "partial", documents, ((0, 25), (25, 60), (60, 90)), skip=(1,))
    with pytest.raises(CollectionError, match="35 of 90 documents are not encoded yet"):
        build_sharded_index(parts, tmp_path / "out", num_shards=2, use_ray=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial"]
    assert json.loads((tmp_path / "partial" / "embeddings.json").read_text())["num_documents"] == 90


def test_a_shard_actor_searches_its_shard_with_a_filter_without_ray(sharded, queries):
    actor = ShardSearchActor(str(sharded / "shard-00001"), SearchSettings(exact=True))
    shard = Index.load(sharded / "shard-00001")
    window = {"n": {"$in": [31, 40, 59, 75]}}  # global positions; shard 1 holds 30..59
    got = actor.search(queries, k=3, return_documents=True, filter_spec=window)
    assert got == ExactSearcher(shard).search(queries, k=3, return_documents=True, filter=window)
    assert all({h.document.id for h in q} == {"doc-31", "doc-40", "doc-59"} for q in got)
    assert actor.search(queries, k=2) == ExactSearcher(shard).search(queries, k=2)
