"""RayShardedSearcher on the in-process 2-CPU Ray cluster, over shards of random vectors (no model)."""

import pytest
import torch

ray = pytest.importorskip("ray")

from flmr.distributed import RayShardedSearcher, build_sharded_index  # noqa: E402
from flmr.index import ShardedIndex  # noqa: E402
from flmr.search import FilterError, ShardedSearcher  # noqa: E402

PLAID = {"ndocs": 16, "ncells": 2, "centroid_score_threshold": 0.3}


def build(embeddings, output, use_ray):
    return build_sharded_index(
        embeddings,
        output,
        num_shards=2,
        num_partitions=16,
        kmeans_iterations=4,
        use_ray=use_ray,
        cpus_per_task=0.5,
    )


@pytest.fixture(scope="module")
def sharded(ray_cluster, vector_embeddings, tmp_path_factory):
    """Shards compressed by Ray tasks."""
    return build(vector_embeddings, tmp_path_factory.mktemp("idx") / "sharded", use_ray=True)


def test_ray_tasks_build_the_shards_this_process_builds(sharded, vector_embeddings, queries, tmp_path):
    local = ShardedIndex.load(build(vector_embeddings, tmp_path / "local", use_ray=False))
    remote = ShardedIndex.load(sharded)
    assert [s.num_documents for s in remote.shards] == [s.num_documents for s in local.shards] == [45, 45]
    for got, want in zip(remote.shards, local.shards, strict=True):
        assert torch.equal(got.codec.centroids, want.codec.centroids)
        positions = torch.arange(want.num_vectors)
        assert torch.equal(got.gather_codes(positions), want.gather_codes(positions))
        assert got.document(7) == want.document(7)


@pytest.fixture(scope="module")
def queries(vector_documents):
    generator = torch.Generator().manual_seed(5)
    noisy = [
        vector_documents[p][:4] + 0.3 * torch.randn(4, 16, generator=generator) for p in (1, 30, 44, 46, 89)
    ]
    return torch.stack([torch.nn.functional.normalize(q, dim=-1) for q in noisy])


def test_replicated_shard_actors_give_the_in_process_merge(ray_cluster, sharded, queries):
    index = ShardedIndex.load(sharded)
    searcher = RayShardedSearcher(index, replicas=2, cpus_per_actor=0.25, **PLAID)
    try:
        assert searcher.index is index and searcher.num_documents == 90 and searcher.offsets == [0, 45]
        assert len(searcher.actors) == 2 and all(len(replicas) == 2 for replicas in searcher.actors)
        expected = ShardedSearcher(index, **PLAID).search(queries, k=6, return_documents=True)
        for _ in range(2):  # successive searches take turns among the replicas: both answer alike
            got = searcher.search(queries, k=6, return_documents=True)
            assert [[(h.pid, h.rank, h.document.id) for h in q] for q in got] == [
                [(h.pid, h.rank, h.document.id) for h in q] for q in expected
            ]
            for have, want in zip(got, expected, strict=True):
                assert [h.score for h in have] == pytest.approx([h.score for h in want], abs=1e-6)
        assert {h.pid for q in got for h in q} & set(range(45, 90))  # both shards contributed
        # every shard applies the filter to its own documents: the merge is the filtered top-k
        # (10 matches, 5 per shard, at most ndocs: each shard re-ranks all of its matches exactly)
        ranked = ShardedSearcher(index, exact=True).search(queries, k=90)
        window = {"n": {"$gte": 40, "$lt": 50}}
        filtered = searcher.search(queries, k=4, filter=window)
        for have, every in zip(filtered, ranked, strict=True):
            want = [h for h in every if 40 <= h.pid < 50][:4]
            assert [h.pid for h in have] == [h.pid for h in want]
            assert [h.score for h in have] == pytest.approx([h.score for h in want], abs=1e-6)
        with pytest.raises(FilterError, match="unknown operator"):
            searcher.search(queries, k=4, filter={"n": {"$between": [1, 2]}})
        assert searcher.document(44).id == "doc-44" and searcher.document(45).id == "doc-45"
        with pytest.raises(IndexError, match="pid 90 out of range"):
            searcher.document(90)
    finally:
        searcher.close()
    assert searcher.actors == []
    with pytest.raises(ValueError, match="replicas must be at least 1"):
        RayShardedSearcher(index, replicas=0)
