"""Metadata filters on real MiniLM token embeddings of the sample collection (see sample_embeddings.py)."""

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

from flmr.index import Index
from flmr.search import ExactSearcher, HybridSearcher, PlaidSearcher
from flmr.search.filters import FilterError, compile_filter, parse_filter
from flmr.search.maxsim import nonzero_rows

NUM_DOCS = 200


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory) -> Index:
    return build_sample_index(tmp_path_factory.mktemp("filters") / "index")


@pytest.fixture(scope="module")
def queries() -> torch.Tensor:
    return encode_queries(list(QUERY_TEXTS))


def matching(predicate) -> set[int]:
    return {pid for pid in range(NUM_DOCS) if predicate(sample_metadata(pid))}


def brute_force(index: Index, query: torch.Tensor, pids: set[int]) -> list[tuple[int, float]]:
    """(pid, MaxSim) of every pid, best first, computed document by document on the vectors search scores by."""
    rows = nonzero_rows(query)
    scored = []
    for pid in sorted(pids):
        vectors, _ = index.document_vectors(torch.tensor([pid]))
        scored.append((pid, float((rows @ vectors.T).amax(dim=1).sum())))
    return sorted(scored, key=lambda item: -item[1])


@pytest.mark.parametrize(
    ("spec", "predicate"),
    [
        ({"lang": "de"}, lambda m: m["lang"] == "de"),
        ({"lang": {"$ne": "de"}}, lambda m: m["lang"] != "de"),
        ({"year": {"$gte": 2000, "$lt": 2010}}, lambda m: 2000 <= m["year"] < 2010),
        ({"year": {"$gt": 2015.5}}, lambda m: m["year"] > 2015.5),
        (
            {"year": {"$lte": 1992}, "lang": {"$in": ["en", "fr"]}},
            lambda m: m["year"] <= 1992 and m["lang"] != "de",
        ),
        ({"tags": "five"}, lambda m: "five" in m["tags"]),  # a list field matches when any element does
        ({"tags": {"$in": ["five", "odd"]}}, lambda m: "five" in m["tags"] or "odd" in m["tags"]),
        ({"tags": {"$nin": ["five"]}}, lambda m: "five" not in m["tags"]),
        ({"rare": True}, lambda m: m.get("rare") is True),
        ({"rare": 1}, lambda m: False),  # booleans only equal booleans
        ({"rare": {"$exists": False}}, lambda m: "rare" not in m),
        ({"rare": {"$ne": True}}, lambda m: "rare" not in m),  # $ne also matches a missing field
        ({"rare": None}, lambda m: "rare" not in m),  # null matches a missing field
        ({"lang": {"$gte": "en"}}, lambda m: m["lang"] >= "en"),  # strings compare with strings
        ({"year": {"$gt": "2000"}}, lambda m: False),  # ... and never with numbers
        ({"missing_field": "x"}, lambda m: False),
    ],
)
def test_filter_masks_follow_the_documented_rules(sample_index, spec, predicate) -> None:
    mask = compile_filter(spec).mask(sample_index)
    assert set(mask.nonzero().flatten().tolist()) == matching(predicate)


def test_id_field_filters_on_the_document_id(sample_index) -> None:
    ids = [record["id"] for record in sample_records()]
    mask = compile_filter({"$id": {"$in": [ids[3], ids[150], "no-such-id"]}}).mask(sample_index)
    assert mask.nonzero().flatten().tolist() == [3, 150]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"year": {"$between": [1, 2]}}, "filter field 'year': unknown operator '$between'"),
        ({"year": {"$gt": [2000]}}, "filter field 'year': $gt takes a number or a string"),
        ({"year": {"$gt": True}}, "filter field 'year': $gt takes a number or a string"),
        ({"tags": {"$in": "five"}}, "filter field 'tags': $in takes a list"),
        ({"tags": {"$in": [["five"]]}}, "filter field 'tags': $in takes a list"),
        ({"rare": {"$exists": 1}}, "filter field 'rare': $exists takes true or false"),
        ({"lang": ["en", "de"]}, "filter field 'lang': $eq takes a string, number, boolean or null"),
        ({"lang": {}}, "filter field 'lang': empty condition"),
        ({"$or": [{"lang": "en"}]}, "filter field '$or': top-level keys are metadata fields"),
        (["lang"], "a filter is a JSON object"),
    ],
)
def test_bad_filters_raise_naming_field_and_operator(spec, message) -> None:
    with pytest.raises(FilterError, match=message.replace("$", r"\$").replace("[", r"\[")):
        compile_filter(spec)


def test_parse_filter_reads_json_and_reports_bad_json() -> None:
    assert parse_filter('{"year": {"$lt": 2000}}').spec == {"year": {"$lt": 2000}}
    assert parse_filter("  ") is None
    with pytest.raises(FilterError, match="not valid JSON"):
        parse_filter("{lang: en}")


def test_searchers_reject_bad_filters_before_searching(sample_index, queries) -> None:
    for searcher in (PlaidSearcher(sample_index), ExactSearcher(sample_index)):
        with pytest.raises(FilterError, match="'year'.*'\\$after'"):
            searcher.search(queries[:1], k=3, filter={"year": {"$after": 2000}})


@pytest.mark.parametrize("searcher_kind", ["plaid", "exact"])
def test_small_matching_sets_give_exact_maxsim_restricted_to_them(
    sample_index, queries, searcher_kind
) -> None:
    spec = {"lang": "fr", "year": {"$gte": 2005}}
    allowed = matching(lambda m: m["lang"] == "fr" and m["year"] >= 2005)
    assert 10 < len(allowed) < 40
    searcher = PlaidSearcher(sample_index) if searcher_kind == "plaid" else ExactSearcher(sample_index)
    hits = searcher.search(queries, k=10, filter=spec, return_documents=True)
    for query, query_hits in zip(queries, hits, strict=True):
        expected = brute_force(sample_index, query, allowed)[:10]
        assert [h.pid for h in query_hits] == [pid for pid, _ in expected]
        torch.testing.assert_close(
            [h.score for h in query_hits], [s for _, s in expected], atol=1e-4, rtol=1e-5
        )
        assert all(
            h.document.metadata["lang"] == "fr" and h.document.metadata["year"] >= 2005 for h in query_hits
        )


def test_plaid_returns_k_matching_documents_far_from_the_query(sample_index, queries) -> None:
    # three word vectors of "How do I play chess ...": their nearest cells hold few documents
    query = nonzero_rows(queries[1])[1:4]
    # the 40 documents the query likes least
    far = [pid for pid, _ in brute_force(sample_index, query, set(range(NUM_DOCS)))[-40:]]
    searcher = PlaidSearcher(sample_index, ncells=1, ndocs=8)  # 40 > ndocs: the candidate path
    first_cells = (query @ sample_index.codec.centroids.T).topk(1, dim=1).indices.flatten().unique()
    near = set(sample_index.candidate_pids(first_cells).tolist())
    assert len(near & set(far)) < 10  # so ncells had to be widened

    hits = searcher.search(query, k=10, filter={"$id": {"$in": [sample_records()[p]["id"] for p in far]}})[0]
    assert len(hits) == 10
    assert {h.pid for h in hits} <= set(far)
    exact = dict(brute_force(sample_index, query, set(far)))
    torch.testing.assert_close([h.score for h in hits], [exact[h.pid] for h in hits], atol=1e-4, rtol=1e-5)


def test_every_plaid_result_matches_a_large_filter(sample_index, queries) -> None:
    allowed = matching(lambda m: m["year"] < 2010 and "even" in m["tags"])
    searcher = PlaidSearcher(sample_index, ndocs=16)  # more matches than ndocs: the candidate path
    assert len(allowed) > 16
    for query_hits in searcher.search(queries, k=12, filter={"year": {"$lt": 2010}, "tags": "even"}):
        assert len(query_hits) == 12
        assert {h.pid for h in query_hits} <= allowed


def test_filtered_top_n_does_not_depend_on_k(sample_index, queries) -> None:
    searcher = PlaidSearcher(sample_index, ndocs=16)
    spec = {"lang": {"$in": ["en", "de"]}}
    small, large = searcher.search(queries, k=3, filter=spec), searcher.search(queries, k=4, filter=spec)
    assert [[h.pid for h in q[:3]] for q in large] == [[h.pid for h in q] for q in small]


def test_deleted_documents_never_return_and_added_ones_are_filtered(tmp_path, queries) -> None:
    index = build_sample_index(tmp_path / "index")
    spec = {"lang": "de"}
    plaid, exact, wide = PlaidSearcher(index), ExactSearcher(index), PlaidSearcher(index, ndocs=8)
    before = [h.pid for h in exact.search(queries[1], k=5, filter=spec)[0]]
    index.delete(before[:3])
    for searcher in (plaid, exact, wide):
        pids = {h.pid for h in searcher.search(queries[1], k=60, filter=spec)[0]}
        assert not pids & set(before[:3])
        assert pids <= matching(lambda m: m["lang"] == "de")
    # a delete does not stale the cached columns; an add does: the new document must be found
    vectors = sample_document_vectors()[before[0]]
    new = index.add([vectors], documents=[{"id": "copy", "metadata": {"lang": "xx"}}])
    assert [h.pid for h in plaid.search(queries[1], k=5, filter={"lang": "xx"})[0]] == [new[0]]


def test_exact_searcher_over_raw_embeddings_refuses_filters() -> None:
    documents = [torch.nn.functional.normalize(torch.randn(5, 8), dim=-1) for _ in range(4)]
    with pytest.raises(ValueError, match="a filter needs an index"):
        ExactSearcher(documents).search(documents[0], k=2, filter={"lang": "en"})


def test_a_filter_matching_nothing_gives_no_results(sample_index, queries) -> None:
    for searcher in (PlaidSearcher(sample_index), ExactSearcher(sample_index)):
        assert searcher.search(queries[:2], k=5, filter={"lang": "xx"}) == [[], []]
        hybrid = HybridSearcher(searcher, weight=0.5)
        assert hybrid.search(queries[:2], k=5, filter={"lang": "xx"}, query_texts=QUERY_TEXTS[:2]) == [[], []]
