"""ShardedSearcher: shard indexes with one shared codec searched as one index, without Ray."""

import json

import pytest
import torch

from engine_fixtures import write_shards
from flmr.index import IndexFormatError, IndexWriter
from flmr.search import ExactSearcher, PlaidSearcher, SearchHit, ShardedSearcher
from flmr.search.sharded import merge_hits, shard_offsets

NUM_DOCUMENTS = 300


@pytest.fixture(scope="module")
def single(documents, codec, fields, tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "index"
    return IndexWriter(nbits=2, codec=codec, store_vectors=False).write(path, documents, documents=fields)


@pytest.fixture(scope="module")
def sharded(documents, codec, fields, tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("sharded"), documents, fields, codec)


@pytest.fixture(scope="module")
def queries(documents):
    generator = torch.Generator().manual_seed(1)
    picks = torch.randint(0, NUM_DOCUMENTS, (6,), generator=generator).tolist()
    noisy = [
        documents[p][:4] + 0.3 * torch.randn(4, documents[p].shape[1], generator=generator) for p in picks
    ]
    return torch.stack([torch.nn.functional.normalize(q, dim=-1) for q in noisy])


def test_exact_sharded_search_equals_the_single_index(sharded, single, queries):
    expected = ExactSearcher(single).search(queries, k=12)
    got = ShardedSearcher(sharded, exact=True).search(queries, k=12, return_documents=True)
    for want, have in zip(expected, got, strict=True):
        assert [h.pid for h in have] == [h.pid for h in want]
        assert [h.rank for h in have] == list(range(1, 13))
        torch.testing.assert_close(
            torch.tensor([h.score for h in have]), torch.tensor([h.score for h in want]), atol=1e-6, rtol=0
        )
        assert [h.document.id for h in have] == [f"doc-{h.pid}" for h in want]


def test_plaid_sharded_equals_the_single_index_when_candidates_are_not_limiting(sharded, single, queries):
    settings = {"ndocs": 4 * NUM_DOCUMENTS, "ncells": 32, "centroid_score_threshold": -1.0}
    expected = PlaidSearcher(single, **settings).search(queries, k=10)
    got = ShardedSearcher(sharded, **settings).search(queries, k=10)
    assert [[h.pid for h in q] for q in got] == [[h.pid for h in q] for q in expected]
    for want, have in zip(expected, got, strict=True):
        assert [h.score for h in have] == pytest.approx([h.score for h in want], abs=1e-6)


def test_plaid_with_limiting_candidates_returns_exact_scores_of_distinct_documents(sharded, single, queries):
    """With a limiting ndocs each shard prunes among its own documents, so results may differ from one
    index's; each hit still carries its document's exact score, and no rank beats exact search's."""
    got = ShardedSearcher(sharded, ndocs=8, ncells=1).search(queries, k=5)
    exact = ExactSearcher(single).search(queries, k=single.num_documents)
    for have, every in zip(got, exact, strict=True):
        score_of = {hit.pid: hit.score for hit in every}
        assert len({hit.pid for hit in have}) == len(have) == 5
        assert [hit.score for hit in have] == pytest.approx([score_of[hit.pid] for hit in have], abs=1e-6)
        assert all(hit.score <= best.score + 1e-6 for hit, best in zip(have, every, strict=False))


def test_a_list_of_folders_and_documents_by_global_pid(sharded):
    searcher = ShardedSearcher([sharded / "shard-0", sharded / "shard-1", sharded / "shard-2"])
    assert searcher.offsets == [0, 110, 200] and searcher.num_documents == NUM_DOCUMENTS
    assert searcher.locate(110) == (1, 0) and searcher.locate(299) == (2, 99)
    assert searcher.document(205).id == "doc-205"
    with pytest.raises(IndexError, match="out of range"):
        searcher.document(NUM_DOCUMENTS)


def test_a_single_index_folder_is_one_shard(single, queries):
    assert [h.pid for h in ShardedSearcher(single.path, exact=True).search(queries, k=3)[0]] == [
        h.pid for h in ExactSearcher(single).search(queries, k=3)[0]
    ]


def test_shards_with_another_codec_are_refused(sharded, documents, tmp_path):
    other = IndexWriter(nbits=2, num_partitions=16, kmeans_iterations=4).write(
        tmp_path / "other", documents[:50]
    )
    with pytest.raises(IndexFormatError, match="another codec"):
        ShardedSearcher([sharded / "shard-0", other.path])


def test_a_stale_manifest_is_refused(sharded, tmp_path):
    manifest = json.loads((sharded / "shards.json").read_text())
    manifest["shards"][1]["num_documents"] = 91
    copy = tmp_path / "copy"
    copy.mkdir()
    for entry in manifest["shards"]:
        (copy / entry["folder"]).symlink_to(sharded / entry["folder"])
    (copy / "shards.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="disagree"):
        ShardedSearcher(copy)


def test_merge_orders_by_score_then_global_pid():
    shard_a = [SearchHit(pid=4, score=0.5, rank=1), SearchHit(pid=1, score=0.2, rank=2)]
    shard_b = [SearchHit(pid=0, score=0.5, rank=1), SearchHit(pid=3, score=0.9, rank=2)]
    merged = merge_hits([shard_b, shard_a], offsets=[10, 0], k=3)
    assert [(h.pid, h.score, h.rank) for h in merged] == [(13, 0.9, 1), (4, 0.5, 2), (10, 0.5, 3)]
    assert shard_offsets([110, 90, 100]) == [0, 110, 200]
