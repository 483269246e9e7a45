"""Metadata filters and hybrid search through the HTTP API and ``Retriever.search`` (tiny FLMR)."""

import json

import pytest
from fastapi.testclient import TestClient
from service_helpers import load_retriever

from flmr.data import SAMPLE_COLLECTION
from flmr.search import HybridHit
from flmr.serving import ServiceSettings, create_app

NUM_DOCUMENTS = 60


def rows() -> list[dict]:
    lines = SAMPLE_COLLECTION.read_text().splitlines()[:NUM_DOCUMENTS]
    return [
        {
            "id": row["id"],
            "text": row["text"],
            "metadata": {"year": 1990 + pid, "tags": ["even" if pid % 2 == 0 else "odd"]},
        }
        for pid, row in enumerate(map(json.loads, lines))
    ]


@pytest.fixture(scope="module")
def retriever():
    return load_retriever()


@pytest.fixture(scope="module")
def index(tmp_path_factory, retriever):
    return retriever.index(
        rows(), tmp_path_factory.mktemp("options") / "index", show_progress=False, doc_maxlen=64
    )


@pytest.fixture(scope="module")
def client(retriever, index):
    with TestClient(create_app(retriever, index, ServiceSettings(max_k=50, batch_wait_ms=1.0))) as client:
        yield client


def test_retriever_search_filters_and_fuses(retriever, index) -> None:
    hits = retriever.search(["a text editor"], index, k=5, filter={"year": {"$gte": 2040}})[0]
    assert len(hits) == 5 and all(hit.document.metadata["year"] >= 2040 for hit in hits)
    hybrid = retriever.search(["WordStar"], index, k=3, hybrid_weight=1.0, fusion="rrf")[0]
    assert isinstance(hybrid[0], HybridHit) and hybrid[0].document.id == "joe"


def test_post_search_with_a_filter_returns_only_matches(client) -> None:
    spec = {"year": {"$gte": 2000, "$lt": 2030}, "tags": {"$in": ["odd"]}}
    body = client.post("/api/search", json={"query": "a text editor", "k": 20, "filter": spec}).json()
    years = [hit["metadata"]["year"] for hit in body["results"]]
    assert len(years) == 15 and all(2000 <= year < 2030 and year % 2 == 1 for year in years)


def test_get_search_takes_the_filter_as_json(client) -> None:
    response = client.get("/api/search", params={"q": "a text editor", "k": 3, "filter": '{"$id": "nano"}'})
    assert [hit["id"] for hit in response.json()["results"]] == ["nano"]


def test_hybrid_search_returns_fused_and_component_scores(client) -> None:
    body = client.post("/api/search", json={"query": "WordStar", "k": 3, "hybrid_weight": 1.0}).json()
    first = body["results"][0]
    assert first["id"] == "joe" and first["score"] == 1.0 and first["bm25_score"] > 0
    assert first["late_interaction_score"] is not None
    plain = client.post("/api/search", json={"query": "WordStar", "k": 3}).json()["results"][0]
    assert plain["bm25_score"] is None


def test_batch_queries_keep_their_own_filters(client) -> None:
    queries = [
        {"query": "a text editor", "k": 4, "filter": {"tags": "even"}},
        {"query": "a text editor", "k": 4, "filter": {"tags": "odd"}},
        {"query": "a text editor", "k": 4},
    ]
    responses = client.post("/api/search/batch", json={"queries": queries}).json()["responses"]
    assert {tuple(hit["metadata"]["tags"]) for hit in responses[0]["results"]} == {("even",)}
    assert {tuple(hit["metadata"]["tags"]) for hit in responses[1]["results"]} == {("odd",)}
    assert len(responses[2]["results"]) == 4


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        (
            {"filter": {"year": {"$after": 2000}}},
            422,
            "invalid filter: filter field 'year': unknown operator '$after'",
        ),
        ({"filter": {"tags": {"$in": "odd"}}}, 422, "filter field 'tags': $in takes a list"),
        ({"hybrid_weight": 2}, 422, "less than or equal to 1"),
        ({"fusion": "max"}, 422, "'linear' or 'rrf'"),
    ],
)
def test_bad_filters_and_weights_are_refused(client, request_body, status, message) -> None:
    response = client.post("/api/search", json={"query": "a text editor", **request_body})
    assert response.status_code == status
    assert message in json.dumps(response.json())


def test_malformed_filter_json_is_a_400(client) -> None:
    response = client.get("/api/search", params={"q": "a text editor", "filter": "{year: 2000}"})
    assert response.status_code == 400 and "the filter is not valid JSON" in response.json()["detail"]
