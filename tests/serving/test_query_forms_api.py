"""Every query form over HTTP with the tiny PreFLMR: instructions, one name for the query text, all images."""

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from flmr.encoding import DEFAULT_INSTRUCTIONS
from flmr.serving import ServiceSettings, create_app
from helpers import build_preflmr_index


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    retriever, index, images = build_preflmr_index(tmp_path_factory.mktemp("forms"))
    settings = ServiceSettings(image_root=images, batch_wait_ms=1.0, max_k=10)
    with TestClient(create_app(retriever, index, settings)) as client:
        yield client, retriever, index


@pytest.fixture(scope="module")
def client(served):
    return served[0]


def image_base64(color=(190, 40, 40)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def ranking(body) -> list[tuple[int, float]]:
    return [(hit["pid"], round(hit["score"], 4)) for hit in body["results"]]


@pytest.mark.parametrize(
    ("body", "form"),
    [
        ({"query": "Dune: who wrote it?"}, "question"),
        ({"query": "what is this?", "image_base64": image_base64()}, "image_and_question"),
        ({"query": "", "image_base64": image_base64()}, "image"),
    ],
)
def test_each_form_reads_its_default_instruction_and_matches_python(served, body, form):
    client, retriever, index = served
    response = client.post("/api/search", json={**body, "k": 3})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["instruction"] == DEFAULT_INSTRUCTIONS[form]
    image = body.get("image_base64")
    images = [Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB")] if image else None
    hits = retriever.search([body["query"] or None], index, k=3, images=images)[0]
    assert ranking(answer) == [(h.pid, round(h.score, 4)) for h in hits]


def test_a_chosen_instruction_is_used_and_reported(client):
    default = client.get("/api/search", params={"query": "who wrote Dune", "k": 3}).json()
    chosen = client.get(
        "/api/search", params={"query": "who wrote Dune", "k": 3, "instruction": "Find the author"}
    )
    none = client.post("/api/search", json={"query": "who wrote Dune", "k": 3, "instruction": ""}).json()
    assert chosen.json()["instruction"] == "Find the author" and none["instruction"] == ""
    assert ranking(chosen.json()) != ranking(default) and ranking(none) != ranking(default)
    bad = client.post("/api/search", json={"query": "x", "instruction": "Note: then this"})
    assert bad.status_code == 422 and "holds ':' before its end" in bad.json()["detail"]


def test_every_endpoint_takes_query_and_its_alias_q(client):
    image = base64.b64decode(image_base64())
    by_get_q = client.get("/api/search", params={"q": "who wrote Dune", "k": 3}).json()
    by_get = client.get("/api/search", params={"query": "who wrote Dune", "k": 3}).json()
    by_post_q = client.post("/api/search", json={"q": "who wrote Dune", "k": 3}).json()
    assert ranking(by_get_q) == ranking(by_get) == ranking(by_post_q)
    upload_q = client.post(
        "/api/search/upload", data={"q": "what is this?", "k": "3"}, files={"image": ("a.png", image)}
    )
    upload = client.post(
        "/api/search/upload", data={"query": "what is this?", "k": "3"}, files={"image": ("a.png", image)}
    )
    assert upload_q.json()["query"] == "what is this?" and ranking(upload_q.json()) == ranking(upload.json())
    batch = client.post("/api/search/batch", json={"queries": [{"q": "who wrote Dune", "k": 3}]}).json()
    assert ranking(batch["responses"][0]) == ranking(by_get)
    explained = client.post("/api/explain", json={"q": "who wrote Dune", "pid": 0}).json()
    assert explained["pid"] == 0 and explained["query_tokens"]
    both = client.get("/api/search", params={"query": "a", "q": "b"})
    assert both.status_code == 422 and "'query' and its alias 'q' differ" in both.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "name"),
    [
        ("get", "/api/search", {"params": {"query": "x", "top_k": 3}}, "top_k"),
        ("post", "/api/search", {"json": {"query": "x", "topk": 3}}, "topk"),
        ("post", "/api/search/upload", {"data": {"question": "x"}}, "question"),
        ("post", "/api/search/batch", {"json": {"queries": [{"query": "x", "kk": 1}]}}, "kk"),
        ("post", "/api/explain", {"json": {"query": "x", "pid": 0, "docid": 1}}, "docid"),
    ],
)
def test_unknown_names_are_refused_not_ignored(client, method, path, kwargs, name):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == 422
    assert name in response.text


def test_all_images_of_a_document_and_its_metadata(client):
    hit = next(
        h
        for h in client.get("/api/search", params={"query": "a red front", "k": 3}).json()["results"]
        if h["id"] == "two-pictures"
    )
    assert hit["image_urls"] == [
        f"/api/documents/{hit['pid']}/images/1",
        f"/api/documents/{hit['pid']}/images/2",
    ]
    assert hit["metadata"] == {"year": 2001, "tags": ["photo"]}
    first, second = (client.get(url) for url in hit["image_urls"])
    assert first.headers["content-type"] == "image/png" and second.headers["content-type"] == "image/jpeg"
    assert client.get(f"/api/documents/{hit['pid']}/images/3").status_code == 404
    assert client.get("/api/documents/0").json()["image_urls"] == []


def test_explanations_name_the_image_of_a_multi_image_document(client):
    body = client.post(
        "/api/search", json={"query": "", "image_base64": image_base64(), "k": 3, "explain": True}
    ).json()
    hit = next(h for h in body["results"] if h["id"] == "two-pictures")
    numbers = {t["image"] for t in hit["explanation"]["document_tokens"] if t["kind"] == "image"}
    assert numbers == {1, 2} and len(hit["image_urls"]) == 2


def test_info_names_the_checkpoint_and_its_instructions(client):
    info = client.get("/api/info").json()
    assert info["checkpoint_name"] == "preflmr_tiny" and info["checkpoint"].endswith("/preflmr_tiny")
    assert info["default_instructions"] == DEFAULT_INSTRUCTIONS


@pytest.mark.parametrize(
    ("question", "with_image"), [("a red front", False), ("a red front", True), ("", True)]
)
@pytest.mark.parametrize("hybrid_weight", [None, 0.5])
def test_every_form_takes_a_filter_a_bm25_share_and_explanations(client, question, with_image, hybrid_weight):
    body = {"query": question, "k": 3, "filter": {"year": {"$gte": 2000}}, "explain": True}
    if with_image:
        body["image_base64"] = image_base64()
    if hybrid_weight is not None:
        body["hybrid_weight"] = hybrid_weight
    response = client.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert {hit["id"] for hit in results} == {"two-pictures", "screens"}  # the filter holds
    assert all(hit["explanation"] is not None for hit in results)
    assert all((hit["bm25_score"] is not None) == (hybrid_weight is not None) for hit in results)
