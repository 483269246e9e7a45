"""One conformance suite for every ``Searcher``: the guarantees of ``flmr.search.base``, checked on each
implementation (exact, PLAID, sharded in-process, sharded on Ray, hybrid around PLAID and exact).

The collection is the shipped sample (200 Debian package texts as real MiniLM token vectors, with the
metadata of sample_embeddings.py); two documents are deleted. The sharded index holds the same
documents in two shards that share the single index's codec. PLAID runs its stages (no exact
fallback) with ``ndocs=24``, so the candidate stages are small enough that k-guarantees are tested.
"""

import pytest
import torch
from sample_embeddings import (
    QUERY_TEXTS,
    build_sample_index,
    encode_queries,
    sample_document_vectors,
    sample_metadata,
    sample_records,
)

from flmr.index import Index, IndexWriter
from flmr.search import (
    ExactSearcher,
    HybridSearcher,
    PlaidSearcher,
    PlaidSettings,
    Searcher,
    SearchError,
    SearchSettings,
    ShardedSearcher,
    build_searcher,
)
from flmr.search.sharded import write_shards_manifest

DELETED = (4, 150)
SPLIT = 120
SMALL_PLAID = SearchSettings(plaid=PlaidSettings(ndocs=24, exact_when_cheaper=False))


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Index:
    index = build_sample_index(tmp_path_factory.mktemp("contract") / "index")
    index.delete(list(DELETED))
    return index


@pytest.fixture(scope="module")
def sharded(single, tmp_path_factory):
    root = tmp_path_factory.mktemp("contract-shards")
    records = sample_records()
    names = []
    for number, (start, stop) in enumerate(((0, SPLIT), (SPLIT, single.num_documents))):
        shard = IndexWriter(nbits=single.nbits, codec=single.codec).write(
            root / f"shard-{number}",
            list(sample_document_vectors()[start:stop]),
            documents=records[start:stop],
        )
        shard.delete([pid - start for pid in DELETED if start <= pid < stop])
        names.append(f"shard-{number}")
    write_shards_manifest(root, names)
    return root


@pytest.fixture(scope="module")
def ray_searchers():
    """The Ray sharded searcher of this module (made once: actors take seconds to start), closed at its end."""
    made = {}
    yield made
    for searcher in made.values():
        searcher.close()


def _ray(single, sharded, made, settings):
    pytest.importorskip("ray")
    from flmr.distributed import RayShardedSearcher, connect

    if settings not in made:
        connect("local", num_cpus=2)
        made[settings] = RayShardedSearcher(sharded, settings, cpus_per_actor=0.25)
    return made[settings]


def _hybrid(inner):
    pytest.importorskip("bm25s")
    return HybridSearcher(inner, weight=0.3)


FACTORIES = {
    "exact": lambda single, sharded, _: ExactSearcher(single),
    "plaid": lambda single, sharded, _: PlaidSearcher(single, SMALL_PLAID),
    "plaid-default": lambda single, sharded, _: build_searcher(single, SearchSettings()),
    "sharded-exact": lambda single, sharded, _: ShardedSearcher(sharded, SearchSettings(exact=True)),
    "sharded-plaid": lambda single, sharded, _: ShardedSearcher(sharded, SMALL_PLAID),
    "hybrid-plaid": lambda single, sharded, _: _hybrid(PlaidSearcher(single, SMALL_PLAID)),
    "hybrid-exact": lambda single, sharded, _: _hybrid(ExactSearcher(single)),
    "hybrid-sharded": lambda single, sharded, _: _hybrid(ShardedSearcher(sharded, SMALL_PLAID)),
    "ray-sharded": pytest.param(
        lambda single, sharded, made: _ray(single, sharded, made, SMALL_PLAID), marks=pytest.mark.ray
    ),
    "hybrid-ray-sharded": pytest.param(
        lambda single, sharded, made: _hybrid(_ray(single, sharded, made, SMALL_PLAID)), marks=pytest.mark.ray
    ),
}


@pytest.fixture(params=list(FACTORIES.values()), ids=list(FACTORIES))
def searcher(request, single, sharded, ray_searchers) -> Searcher:
    return request.param(single, sharded, ray_searchers)


@pytest.fixture(scope="module")
def queries() -> torch.Tensor:
    return encode_queries(list(QUERY_TEXTS[:4]))


def _search(searcher: Searcher, queries: torch.Tensor, k: int, **options) -> list:
    texts = list(QUERY_TEXTS[: queries.shape[0]]) if queries.dim() == 3 else [QUERY_TEXTS[0]]
    return searcher.search(queries, k, query_texts=texts, **options)


def _live(pid: int) -> bool:
    return pid not in DELETED


def test_is_a_searcher(searcher) -> None:
    assert isinstance(searcher, Searcher)
    assert searcher.num_documents == 200


def test_one_list_per_query_and_none_for_an_all_zero_query(searcher, queries) -> None:
    batch = torch.cat([queries[:1], torch.zeros_like(queries[:1]), queries[1:2]])
    hits = _search(searcher, batch, 5)
    assert len(hits) == 3
    assert hits[1] == []
    assert len(hits[0]) == len(hits[2]) == 5


@pytest.mark.parametrize("k", [1, 10, 60, 500])
def test_k_guarantee_ranks_and_order(searcher, queries, k) -> None:
    live = 200 - len(DELETED)
    for hits in _search(searcher, queries[:2], k):
        assert len(hits) == min(k, live)
        assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=True)
        assert all(_live(hit.pid) for hit in hits)
        assert len({hit.pid for hit in hits}) == len(hits)


def test_filter_keeps_only_matching_documents_and_still_fills_k(searcher, queries) -> None:
    matching = [pid for pid in range(200) if sample_metadata(pid)["lang"] == "de" and _live(pid)]
    for k in (5, 100):
        for hits in _search(searcher, queries[:2], k, filter={"lang": "de"}):
            assert len(hits) == min(k, len(matching))
            assert {hit.pid for hit in hits} <= set(matching)


def test_return_documents_gives_each_hits_stored_fields(searcher, queries) -> None:
    records = sample_records()
    hits = _search(searcher, queries[:1], 5, return_documents=True)[0]
    assert [hit.document.id for hit in hits] == [records[hit.pid]["id"] for hit in hits]
    assert searcher.document(hits[0].pid).id == records[hits[0].pid]["id"]
    plain = _search(searcher, queries[:1], 5)[0]
    assert all(hit.document is None for hit in plain)


def test_a_querys_hits_do_not_depend_on_its_batch(searcher, queries) -> None:
    together = _search(searcher, queries, 10)
    for number in range(queries.shape[0]):
        alone = searcher.search(queries[number : number + 1], 10, query_texts=[QUERY_TEXTS[number]])[0]
        assert [hit.pid for hit in alone] == [hit.pid for hit in together[number]]
        assert [hit.score for hit in alone] == pytest.approx(
            [hit.score for hit in together[number]], rel=1e-5
        )


def test_one_query_without_a_batch_dimension(searcher, queries) -> None:
    assert [hit.pid for hit in _search(searcher, queries[0], 3)[0]] == [
        hit.pid for hit in _search(searcher, queries[:1], 3)[0]
    ]


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_a_bad_k_is_refused(searcher, queries, k) -> None:
    with pytest.raises(SearchError, match="k must be a positive integer"):
        _search(searcher, queries[:1], k)


def test_hybrid_over_shards_equals_hybrid_over_one_index(single, sharded, queries) -> None:
    pytest.importorskip("bm25s")
    exact = SearchSettings(exact=True)
    one = HybridSearcher(ExactSearcher(single), weight=0.3).search(queries, 10, query_texts=QUERY_TEXTS[:4])
    shards = HybridSearcher(ShardedSearcher(sharded, exact), weight=0.3).search(
        queries, 10, query_texts=QUERY_TEXTS[:4]
    )
    for mine, theirs in zip(shards, one, strict=True):
        assert [hit.pid for hit in mine] == [hit.pid for hit in theirs]
        assert [hit.bm25_score for hit in mine] == pytest.approx([hit.bm25_score for hit in theirs], rel=1e-5)


def test_exact_searchers_agree_on_the_top_k(single, sharded, queries) -> None:
    reference = ExactSearcher(single).search(queries, 20)
    for other in (
        ShardedSearcher(sharded, SearchSettings(exact=True)),
        build_searcher(single, SearchSettings()),
    ):
        for mine, theirs in zip(other.search(queries, 20), reference, strict=True):
            assert [hit.pid for hit in mine] == [hit.pid for hit in theirs]
