"""The explanation API: /api/explain, and ``explain`` on every search endpoint, on a tiny checkpoint."""

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import IMAGE_DOCUMENTS, build_index, load_retriever

from flmr.serving import ServiceSettings, create_app

QUESTION = "Which text editor can I use in a terminal?"
PREFIX = 4  # image vectors per image of the tiny checkpoint


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explained")
    retriever = load_retriever()
    index, images = build_index(folder, retriever, break_images=False)
    with TestClient(create_app(retriever, index, ServiceSettings(image_root=images, max_k=20))) as client:
        yield client, index


def image_base64(color=(220, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def check_explains(explanation, pid, score, text):
    assert explanation["pid"] == pid
    contributions = [match["contribution"] for match in explanation["matches"]]
    assert len(contributions) == len(explanation["query_tokens"])
    assert abs(sum(contributions) - score) < 1e-5 and abs(explanation["score"] - score) < 1e-5
    tokens = explanation["document_tokens"]
    assert [t["position"] for t in tokens] == list(range(len(tokens)))
    assert abs(sum(t["contribution"] for t in tokens) - score) < 1e-5
    for token in tokens:
        if token["start"] is not None:
            assert text[token["start"] : token["end"]].lower() == token["label"].removeprefix("##")
        assert (token["best_query"] is None) == (token["contribution"] == 0)


def test_explain_a_document_by_pid_and_by_id(served):
    client, index = served
    hit = client.get("/api/search", params={"q": QUESTION, "k": 3}).json()["results"][0]
    assert hit["explanation"] is None
    by_pid = client.post("/api/explain", json={"query": QUESTION, "pid": hit["pid"]})
    assert by_pid.status_code == 200
    explanation = by_pid.json()
    check_explains(explanation, hit["pid"], hit["score"], hit["text"])
    labels = [t["label"] for t in explanation["query_tokens"]]
    assert labels[:3] == ["[CLS]", "[Q]", "which"] and labels[-1] == "[MASK]" and len(labels) == 32
    assert [t["label"] for t in explanation["document_tokens"][:2]] == ["[CLS]", "[D]"]
    by_id = client.post("/api/explain", json={"query": QUESTION, "id": hit["id"]}).json()
    assert by_id == explanation


def test_search_with_explain_attaches_one_explanation_per_result(served):
    client, _ = served
    body = client.get("/api/search", params={"q": QUESTION, "k": 5, "explain": "true"}).json()
    assert len(body["results"]) == 5
    for hit in body["results"]:
        check_explains(hit["explanation"], hit["pid"], hit["score"], hit["text"])
    posted = client.post("/api/search", json={"query": QUESTION, "k": 5, "explain": True}).json()
    assert [h["explanation"] for h in posted["results"]] == [h["explanation"] for h in body["results"]]


def test_image_queries_are_explained_with_image_vectors_and_image_blocks(served):
    client, _ = served
    body = client.post(
        "/api/search",
        json={"query": "a picture of a red square", "k": 15, "image_base64": image_base64(), "explain": True},
    ).json()
    for hit in body["results"]:
        explanation = hit["explanation"]
        check_explains(explanation, hit["pid"], hit["score"], hit["text"])
        kinds = [t["kind"] for t in explanation["query_tokens"]]
        assert kinds.count("image") == PREFIX
        image_tokens = [t for t in explanation["document_tokens"] if t["kind"] == "image"]
        assert len(image_tokens) == (PREFIX if hit["id"] in IMAGE_DOCUMENTS else 0)
        assert all(t["label"] == "image 1" and t["image"] == 1 for t in image_tokens)
    upload = client.post(
        "/api/search/upload",
        data={"query": "a picture of a red square", "k": "15", "explain": "true"},
        files={"image": ("q.png", base64.b64decode(image_base64()), "image/png")},
    ).json()
    assert [h["explanation"] for h in upload["results"]] == [h["explanation"] for h in body["results"]]


def test_batch_search_explains_the_queries_that_ask(served):
    client, _ = served
    body = client.post(
        "/api/search/batch",
        json={"queries": [{"query": QUESTION, "k": 2, "explain": True}, {"query": "web server", "k": 2}]},
    ).json()
    explained, plain = body["responses"]
    assert all(hit["explanation"]["pid"] == hit["pid"] for hit in explained["results"])
    assert all(hit["explanation"] is None for hit in plain["results"])


@pytest.mark.parametrize(
    ("request_body", "status", "detail"),
    [
        ({"query": QUESTION}, 422, "pid or its id"),
        ({"query": QUESTION, "pid": 0, "id": "vim"}, 422, "pid or its id"),
        ({"query": "  ", "pid": 0}, 422, "neither text nor an image"),
        ({"query": QUESTION, "pid": 999}, 404, "no document with pid 999"),
        ({"query": QUESTION, "id": "nothing"}, 404, "no document with id 'nothing'"),
        ({"query": QUESTION, "pid": 0, "image_base64": "bm90IGFuIGltYWdl"}, 400, "not a readable"),
    ],
)
def test_bad_explain_requests_are_refused(served, request_body, status, detail):
    client, _ = served
    response = client.post("/api/explain", json=request_body)
    assert response.status_code == status and detail in response.json()["detail"]


def test_the_schema_documents_explanations(served):
    client, _ = served
    schema = client.get("/openapi.json").json()
    assert "/api/explain" in schema["paths"]
    assert {"Explanation", "DocumentToken", "QueryToken", "TokenMatch"} <= set(
        schema["components"]["schemas"]
    )
    assert "explanation" in schema["components"]["schemas"]["Hit"]["properties"]
