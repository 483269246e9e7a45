"""One bad request cannot hurt the service: bad text, non-finite k, pixel bombs, huge photos, stalled bodies."""

import asyncio
import io
import json
import socket
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import running_server, same_ranking

from flmr.serving import DynamicBatcher, SearchEngine, SearchQuery, ServiceSettings, create_app
from flmr.serving.inputs import InputError, decode_image
from helpers import build_preflmr_index

SETTINGS = ServiceSettings(batch_wait_ms=20.0, max_k=10, request_body_timeout_s=0.5)
GOOD = ["who wrote Dune", "laptop screens", "a red picture", "science fiction", "3:2 ratio: brands?"]


@pytest.fixture(scope="module")
def preflmr(tmp_path_factory):
    return build_preflmr_index(tmp_path_factory.mktemp("robust"))


@pytest.fixture(scope="module")
def client(preflmr):
    retriever, index, _ = preflmr
    with TestClient(create_app(retriever, index, SETTINGS)) as client:
        yield client


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (its data is a few bytes): a pixel bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(10)))
        + chunk(b"IEND", b"")
    )


def jpeg(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (120, 60, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"query": "x", "k": NaN}', "k"),
        ('{"query": "x", "k": 1e400}', "k"),
        ('{"query": "x", "k": -Infinity}', "k"),
        ('{"query": "x", "hybrid_weight": NaN}', "hybrid_weight"),
    ],
)
def test_non_finite_numbers_get_422_not_500(client, raw, field):
    response = client.post("/api/search", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field  # a JSON body, naming the field


def test_text_the_tokenizer_cannot_read_gets_422(client):
    raw = '{"query": "bad \\ud800 text"}'
    response = client.post("/api/search", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "lone surrogate U+D800" in response.json()["detail"]


def test_a_query_the_tokenizer_rejects_fails_alone_in_its_batch(preflmr):
    retriever, index, _ = preflmr
    engine = SearchEngine(retriever, index, SETTINGS)
    alone = [engine.search_batch([SearchQuery(text, 3)])[0] for text in GOOD]

    async def mixed():
        batcher = DynamicBatcher(
            engine.search_batch, max_batch_size=16, max_wait_ms=50, request_errors=(InputError,)
        )
        await batcher.start()
        try:
            queries = [SearchQuery(text, 3) for text in GOOD[:2]] + [SearchQuery("bad \ud800", 3)]
            queries += [SearchQuery(text, 3) for text in GOOD[2:]]
            return await asyncio.gather(
                *(batcher.submit(q) for q in queries), return_exceptions=True
            ), batcher
        finally:
            await batcher.stop()

    results, batcher = asyncio.run(mixed())
    assert list(batcher.batch_sizes)[0] == len(GOOD) + 1  # they did share a batch
    bad = results.pop(2)
    assert isinstance(bad, InputError) and bad.status == 422 and "tokenizer rejects" in bad.message
    assert [[(h.pid, h.score) for h in hits] for hits in results] == [
        [(h.pid, h.score) for h in hits] for hits in alone
    ]


def test_concurrent_good_queries_are_unharmed_by_bad_ones(preflmr):
    retriever, index, _ = preflmr
    with (
        running_server(create_app(retriever, index, SETTINGS)) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        alone = {
            text: http.post("/api/search", json={"query": text, "k": 3}).json()["results"] for text in GOOD
        }
        bodies = [json.dumps({"query": text, "k": 3}) for text in GOOD * 3]
        bodies[3:3] = ['{"query": "\\ud800"}', '{"query": "x", "k": NaN}', '{"query": "x", "k": 1e400}']

        def send(body):
            return http.post("/api/search", content=body, headers={"content-type": "application/json"})

        with ThreadPoolExecutor(len(bodies)) as pool:
            responses = list(pool.map(send, bodies))
    for body, response in zip(bodies, responses, strict=True):
        if "ud800" in body or "NaN" in body or "1e400" in body:
            assert response.status_code == 422, body
        else:
            assert response.status_code == 200
            assert same_ranking(response.json()["results"], alone[json.loads(body)["query"]])


@pytest.mark.parametrize(("side", "message"), [(20000, "far too many pixels"), (5000, "5000x5000 pixels")])
def test_pixel_bombs_are_refused_with_413_before_decoding(client, side, message):
    response = client.post(
        "/api/search/upload", data={"query": "x"}, files={"image": ("bomb.png", png_header(side, side))}
    )
    assert response.status_code == 413 and message in response.json()["detail"]


def test_large_photos_are_decoded_at_reduced_size():
    settings = ServiceSettings()
    image = decode_image(jpeg(4096), settings)
    assert image.size == (512, 512)  # decoded at 1/8 scale: the shorter side stays >= decode_side
    assert decode_image(jpeg(300), settings).size == (300, 300)
    wide = io.BytesIO()
    Image.new("RGB", (3000, 1000), (1, 2, 3)).save(wide, format="PNG")
    assert decode_image(wide.getvalue(), settings).size == (1500, 500)  # reduced by 2 after decoding


def test_a_4096_px_jpeg_query_is_answered(client):
    response = client.post("/api/search/upload", data={"k": "2"}, files={"image": ("photo.jpg", jpeg(4096))})
    assert response.status_code == 200 and len(response.json()["results"]) == 2


def test_a_stalled_request_body_gets_408(preflmr):
    retriever, index, _ = preflmr
    with running_server(create_app(retriever, index, SETTINGS)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            started = time.monotonic()
            connection.sendall(
                b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"query": '
            )
            answer = connection.recv(4096)
            elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
        assert elapsed < 5
        assert httpx.get(f"{url}/api/search", params={"query": "who wrote Dune", "k": 1}).status_code == 200
