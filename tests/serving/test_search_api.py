"""The HTTP API end to end on a tiny checkpoint: every endpoint, the limits, refused inputs."""

import base64
import dataclasses
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import build_index, load_retriever, make_image

from flmr.retrieval import EncoderMismatchError, Retriever
from flmr.serving import ServiceSettings, create_app
from helpers import PREFLMR_TINY

SETTINGS = ServiceSettings(
    max_query_chars=200,
    max_k=20,
    default_k=5,
    max_batch_queries=4,
    max_image_bytes=64 * 1024,
    max_image_pixels=256 * 256,
    max_request_bytes=512 * 1024,
    batch_wait_ms=1.0,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    retriever = load_retriever()
    index, images = build_index(folder, retriever)
    settings = dataclasses.replace(SETTINGS, image_root=images)
    with TestClient(create_app(retriever, index, settings)) as client:
        yield client, index, folder


@pytest.fixture(scope="module")
def client(served):
    return served[0]


def png_bytes(size=(40, 30), color=(10, 200, 30), image_format="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=image_format)
    return buffer.getvalue()


def check_ranking(body, k):
    ranks = [hit["rank"] for hit in body["results"]]
    scores = [hit["score"] for hit in body["results"]]
    assert ranks == list(range(1, k + 1))
    assert scores == sorted(scores, reverse=True)


def test_health_readiness_and_info(client):
    assert client.get("/api/health").json() == {"status": "ok"}
    assert client.get("/api/ready").json()["ready"] is True
    info = client.get("/api/info").json()
    assert info["num_documents"] == 15 and info["search"] == "plaid"
    assert info["limits"]["max_k"] == 20 and info["limits"]["default_k"] == 5
    assert info["checkpoint"].endswith("flmr_tiny")


def test_openapi_schema_lists_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths["/api/search"])
    for path in [
        "/api/search/upload",
        "/api/search/batch",
        "/api/documents/{pid}",
        "/api/documents/by-id/{document_id}",
        "/api/documents/{pid}/image",
        "/api/health",
        "/api/ready",
        "/api/info",
    ]:
        assert path in paths


def test_search_by_text_get_and_post_agree(client):
    by_get = client.get("/api/search", params={"q": "Which text editor can I use?", "k": 4}).json()
    by_post = client.post("/api/search", json={"query": "Which text editor can I use?", "k": 4}).json()
    check_ranking(by_get, 4)
    assert by_get["with_image"] is False and by_get["k"] == 4
    assert [h["pid"] for h in by_get["results"]] == [h["pid"] for h in by_post["results"]]
    assert client.get("/api/search", params={"q": "editor"}).json()["k"] == 5  # the default k


def test_image_documents_come_with_an_image_url_and_no_server_path(client):
    hits = client.get("/api/search", params={"q": "a picture of a red square", "k": 15}).json()["results"]
    red = next(hit for hit in hits if hit["id"] == "red-square")
    assert red["image_url"] == f"/api/documents/{red['pid']}/image"
    assert all("image_path" not in hit for hit in hits)
    assert next(hit for hit in hits if hit["id"] == "vim")["image_url"] is None


def test_search_with_a_base64_image_and_with_a_data_url(client):
    encoded = base64.b64encode(png_bytes()).decode()
    plain = client.post("/api/search", json={"query": "what is this?", "k": 3, "image_base64": encoded})
    data_url = client.post(
        "/api/search",
        json={"query": "what is this?", "k": 3, "image_base64": f"data:image/png;base64,{encoded}"},
    )
    assert plain.status_code == 200 and plain.json()["with_image"] is True
    check_ranking(plain.json(), 3)
    assert [h["pid"] for h in plain.json()["results"]] == [h["pid"] for h in data_url.json()["results"]]


def test_search_with_an_uploaded_image_matches_base64(client):
    image = png_bytes()
    uploaded = client.post(
        "/api/search/upload",
        data={"query": "what is this?", "k": "3"},
        files={"image": ("photo.png", image, "image/png")},
    ).json()
    as_base64 = client.post(
        "/api/search",
        json={"query": "what is this?", "k": 3, "image_base64": base64.b64encode(image).decode()},
    ).json()
    assert uploaded["with_image"] is True
    assert [(h["pid"], round(h["score"], 4)) for h in uploaded["results"]] == [
        (h["pid"], round(h["score"], 4)) for h in as_base64["results"]
    ]
    text_only = client.post("/api/search/upload", data={"query": "what is this?"}).json()
    assert text_only["with_image"] is False


def test_image_only_queries_over_json_and_upload(client):
    image = png_bytes()
    encoded = base64.b64encode(image).decode()
    by_json = client.post("/api/search", json={"query": "", "k": 3, "image_base64": encoded})
    check_ranking(by_json.json(), 3)
    by_upload = client.post("/api/search/upload", data={"k": "3"}, files={"image": ("a.png", image)})
    assert by_upload.status_code == 200, by_upload.text
    assert [h["pid"] for h in by_upload.json()["results"]] == [h["pid"] for h in by_json.json()["results"]]
    with_text = client.post("/api/search", json={"query": "what is this?", "k": 3, "image_base64": encoded})
    assert [h["score"] for h in with_text.json()["results"]] != [
        h["score"] for h in by_json.json()["results"]
    ]


def test_batch_search_answers_in_order_like_single_searches(client):
    image = base64.b64encode(png_bytes()).decode()
    queries = [
        {"query": "Which text editor can I use?", "k": 3},
        {"query": "what is this?", "k": 2, "image_base64": image},
        {"query": "a web server"},
    ]
    responses = client.post("/api/search/batch", json={"queries": queries}).json()["responses"]
    assert [r["query"] for r in responses] == [q["query"] for q in queries]
    assert [len(r["results"]) for r in responses] == [3, 2, 5]
    for query, response in zip(queries, responses, strict=True):
        alone = client.post("/api/search", json=query).json()
        assert [(h["pid"], round(h["score"], 4)) for h in response["results"]] == [
            (h["pid"], round(h["score"], 4)) for h in alone["results"]
        ]


def test_documents_by_pid_and_by_stored_id(client):
    by_pid = client.get("/api/documents/0").json()
    assert by_pid["pid"] == 0 and by_pid["id"] == "vim" and by_pid["text"].startswith("vim:")
    assert client.get("/api/documents/by-id/red-square").json()["pid"] == 10
    for path in ["/api/documents/15", "/api/documents/-1", "/api/documents/by-id/nothing"]:
        response = client.get(path)
        assert response.status_code == 404 and "no document" in response.json()["detail"]
    assert client.get("/api/documents/zero").status_code == 422


def test_document_images_are_served_only_when_stored_checked_and_inside_the_root(client, served):
    index = served[1]
    red = client.get("/api/documents/10/image")
    assert red.status_code == 200 and red.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(red.content)).size == (64, 48)
    assert client.get("/api/documents/11/image").headers["content-type"] == "image/jpeg"
    swapped, linked, gone, text = (client.get(f"/api/documents/{pid}/image") for pid in (12, 13, 14, 0))
    assert swapped.status_code == 404 and "not an image" in swapped.json()["detail"]
    assert b"secret" not in swapped.content
    assert linked.status_code == 403 and "outside" in linked.json()["detail"]
    assert gone.status_code == 404 and "missing" in gone.json()["detail"]
    assert text.status_code == 404 and "has no image" in text.json()["detail"]
    assert index.document(13).image_path.endswith("linked.png")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/app.py",
        "/static/..%2f..%2fapp.py",
        "/api/documents/..%2f..%2f..%2fetc%2fpasswd/image",
        "/api/documents/by-id/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/documents/by-id/../../etc/passwd",
    ],
)
def test_path_traversal_attempts_read_nothing(client, path):
    response = client.get(path)
    assert response.status_code in (404, 422)
    assert b"root:" not in response.content and b"import" not in response.content


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        ({"query": "   ", "k": 3}, 422, "neither text nor an image"),
        ({"query": "x" * 201}, 422, "at most 200"),
        ({"query": "x", "k": 0}, 422, "between 1 and 20"),
        ({"query": "x", "k": 21}, 422, "between 1 and 20"),
        ({"query": "x", "k": 10**30}, 422, "between 1 and 20"),
        ({"query": "x", "image_base64": "not base64 !!"}, 400, "not valid base64"),
        ({"query": "x", "image_base64": base64.b64encode(b"plain text").decode()}, 400, "not a readable"),
        (
            {"query": "x", "image_base64": base64.b64encode(png_bytes(image_format="TIFF")).decode()},
            400,
            "readable",
        ),
        (
            {"query": "x", "image_base64": base64.b64encode(png_bytes()[:60]).decode()},
            400,
            "truncated or corrupt",
        ),
        ({"query": "x", "image_base64": ""}, 400, "empty"),
        ({"query": "x", "image_base64": base64.b64encode(png_bytes((300, 300))).decode()}, 413, "pixels"),
        ({"query": "x", "image_base64": "A" * 100_000}, 413, "larger than"),
    ],
)
def test_invalid_queries_get_clear_4xx_errors(client, request_body, status, message):
    response = client.post("/api/search", json=request_body)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_upload_limits(client):
    too_many_bytes = client.post(
        "/api/search/upload",
        data={"query": "x"},
        files={"image": ("big.png", b"\x89PNG" + bytes(70_000), "image/png")},
    )
    not_an_image = client.post(
        "/api/search/upload", data={"query": "x"}, files={"image": ("a.png", b"GIF89a nonsense", "image/png")}
    )
    huge_body = client.post(
        "/api/search", content=b"{" + b" " * 600_000 + b"}", headers={"content-type": "application/json"}
    )
    assert too_many_bytes.status_code == 413 and "at most 65536" in too_many_bytes.json()["detail"]
    assert not_an_image.status_code == 400
    assert huge_body.status_code == 413


def test_malformed_requests_are_refused(client):
    assert (
        client.post(
            "/api/search", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert client.get("/api/search", params={"q": "x", "k": "ten"}).status_code == 422
    assert client.get("/api/search").status_code == 422
    assert client.post("/api/search/upload", data={"k": "3"}).status_code == 422
    five = [{"query": "x"}] * 5
    assert "1 to 4 queries" in client.post("/api/search/batch", json={"queries": five}).json()["detail"]
    assert client.post("/api/search/batch", json={"queries": []}).status_code == 422


def test_the_service_keeps_answering_after_bad_requests(client):
    for body in ({"query": "x", "image_base64": "%%%"}, {"query": "x", "k": -5}, {"nothing": 1}):
        client.post("/api/search", json=body)
    assert client.get("/api/ready").status_code == 200
    assert len(client.get("/api/search", params={"q": "editor", "k": 2}).json()["results"]) == 2


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="search-form"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_an_index_built_with_another_checkpoint_does_not_start(served):
    index = served[1]
    app = create_app(Retriever.from_pretrained(PREFLMR_TINY), index, SETTINGS)
    with pytest.raises(EncoderMismatchError), TestClient(app):
        pass


def test_image_root_is_optional(tmp_path):
    retriever = load_retriever()
    path = make_image(tmp_path / "photo.png", (5, 5, 5))
    index = retriever.index(
        [{"id": "p", "text": "a photo", "image_path": str(path)}, "text"], tmp_path / "i", show_progress=False
    )
    with TestClient(create_app(retriever, index, SETTINGS)) as client:
        assert client.get("/api/documents/0/image").status_code == 200
