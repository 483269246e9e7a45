"""Dynamic batching: the batcher on its own, and concurrent HTTP requests sharing forward passes."""

import asyncio
import threading
import time

import httpx
import pytest
from service_helpers import build_index, load_retriever, running_server

from flmr.serving import DynamicBatcher, ServiceSettings, create_app


def run(coroutine):
    return asyncio.run(coroutine)


async def with_batcher(batcher, body):
    await batcher.start()
    try:
        return await body()
    finally:
        await batcher.stop()


def test_concurrent_requests_are_batched_up_to_the_maximum():
    seen = []

    def double(numbers):
        seen.append(list(numbers))
        return [2 * n for n in numbers]

    batcher = DynamicBatcher(double, max_batch_size=4, max_wait_ms=50)
    results = run(with_batcher(batcher, lambda: asyncio.gather(*(batcher.submit(n) for n in range(10)))))
    assert results == [2 * n for n in range(10)]
    assert list(batcher.batch_sizes) == [4, 4, 2]
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert (batcher.num_batches, batcher.num_requests) == (3, 10)


def test_requests_arriving_during_a_batch_form_the_next_one():
    release = threading.Event()

    def slow(items):
        release.wait(5)  # the first batch holds the worker until every other request has queued
        return items

    async def body():
        first = asyncio.ensure_future(batcher.submit("first"))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.submit(n)) for n in range(5)]
        await asyncio.sleep(0.05)
        release.set()
        return await first, await asyncio.gather(*rest)

    batcher = DynamicBatcher(slow, max_batch_size=8, max_wait_ms=1)
    assert run(with_batcher(batcher, body)) == ("first", [0, 1, 2, 3, 4])
    assert list(batcher.batch_sizes) == [1, 5]


def test_a_lone_request_waits_only_the_window():
    async def body():
        started = time.perf_counter()
        result = await batcher.submit("alone")
        return result, time.perf_counter() - started

    batcher = DynamicBatcher(lambda items: items, max_batch_size=32, max_wait_ms=20)
    result, seconds = run(with_batcher(batcher, body))
    assert result == "alone" and list(batcher.batch_sizes) == [1]
    assert 0.015 < seconds < 1.0


def test_a_bad_request_fails_alone_and_the_worker_goes_on(caplog):
    calls = []

    def fragile(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("cannot process bad")
        return [item.upper() for item in items]

    async def body():
        mixed = await asyncio.gather(
            *(batcher.submit(item) for item in ["ok1", "bad", "ok2"]), return_exceptions=True
        )
        return mixed, await batcher.submit("after")

    batcher = DynamicBatcher(fragile, max_batch_size=8, max_wait_ms=20, request_errors=(ValueError,))
    mixed, after = run(with_batcher(batcher, body))
    assert mixed[0] == "OK1" and mixed[2] == "OK2"
    assert isinstance(mixed[1], ValueError) and str(mixed[1]) == "cannot process bad"
    assert calls == [["ok1", "bad", "ok2"], ["ok1"], ["bad"], ["ok2"], ["after"]]  # the batch, then alone
    assert after == "AFTER"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # a request's own fault: no ERROR


def test_a_result_count_mismatch_is_an_error():
    batcher = DynamicBatcher(lambda items: items[:1], max_batch_size=8, max_wait_ms=5)

    async def body():
        return await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in run(with_batcher(batcher, body)))


def test_submitting_needs_a_started_batcher():
    with pytest.raises(RuntimeError, match="not running"):
        run(DynamicBatcher(lambda items: items).submit(1))
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(lambda items: items, max_batch_size=0)


def test_concurrent_http_searches_share_forward_passes(tmp_path):
    retriever = load_retriever()
    index, _ = build_index(tmp_path, retriever)
    # A long window makes the batch deterministic: all 8 requests arrive well within it.
    settings = ServiceSettings(max_batch_size=8, batch_wait_ms=1000)
    queries = [f"question number {n} about text editors" for n in range(8)]

    async def search_all(base_url):
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            responses = await asyncio.gather(
                *(client.get("/api/search", params={"q": q, "k": 3}) for q in queries)
            )
            info = (await client.get("/api/info")).json()
        return [r.json() for r in responses], info["batching"]

    with running_server(create_app(retriever, index, settings)) as base_url:
        batched, stats = asyncio.run(search_all(base_url))
    assert stats["recent_batch_sizes"] == [8]
    assert (stats["batches"], stats["queries"]) == (1, 8)
    for query, together in zip(queries, batched, strict=True):
        alone = retriever.search(query, index, k=3)[0]
        assert [h["pid"] for h in together["results"]] == [h.pid for h in alone]
        # a batch goes through matrix products of other shapes than one query: float rounding only
        assert [h["score"] for h in together["results"]] == pytest.approx([h.score for h in alone], rel=1e-5)
