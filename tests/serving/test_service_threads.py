"""The service's concurrency model: batches leave ``request_cpus`` cores to request handling."""

import pytest
import torch
from fastapi.testclient import TestClient
from service_helpers import build_index, load_retriever

from flmr import runtime
from flmr.serving import SearchEngine, ServiceSettings, create_app


@pytest.fixture
def four_idle_cores(monkeypatch):
    for name in ("FLMR_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "_torch_defaults", lambda: frozenset({torch.get_num_threads()}))
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    monkeypatch.setattr(runtime._load, "busy_cores", lambda: 0.0)


@pytest.mark.parametrize("request_cpus", [1, 2])
def test_batches_leave_request_cpus_to_requests(tmp_path, monkeypatch, four_idle_cores, request_cpus):
    threads_of_batches = []
    search_batch = SearchEngine.search_batch

    def recording(self, queries):
        threads_of_batches.append(runtime.threads_for(1e15))  # what big work in the batch thread gets
        return search_batch(self, queries)

    monkeypatch.setattr(SearchEngine, "search_batch", recording)
    retriever = load_retriever()
    index, _ = build_index(tmp_path, retriever, break_images=False)
    app = create_app(retriever, index, ServiceSettings(request_cpus=request_cpus))
    with TestClient(app) as client:
        assert client.get("/api/search", params={"q": "text editor", "k": 2}).status_code == 200
    assert threads_of_batches[-1] == 4 - request_cpus  # the warm-up batch and the request's
    assert runtime._reserved["cpus"] == 0  # released when the service stops


def test_request_cpus_must_not_be_negative():
    with pytest.raises(ValueError, match="request_cpus"):
        ServiceSettings(request_cpus=-1)
