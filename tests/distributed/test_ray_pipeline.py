"""Scale-out on an in-process 2-CPU Ray cluster: encode in parts, resume, build shards, search them as one."""

import json
import shutil
import socket
import urllib.request

import pytest
import torch

ray = pytest.importorskip("ray")

from flmr.cli.main import main  # noqa: E402
from flmr.distributed import (  # noqa: E402
    RayShardedSearcher,
    build_sharded_index,
    encode_collection,
    serve_sharded_index,
)
from flmr.encoding import CollectionError, DocumentEncoder, read_collection  # noqa: E402
from flmr.index import Index, IndexWriter  # noqa: E402
from flmr.model import FLMRModelForRetrieval  # noqa: E402
from flmr.model.image_processing import load_image_processor  # noqa: E402
from flmr.retrieval import Retriever  # noqa: E402
from flmr.search import ExactSearcher, PlaidSearcher, ShardedSearcher  # noqa: E402
from helpers import FLMR_TINY  # noqa: E402

ROWS_PER_PART = 16
QUERIES = ["Real-time strategy game", "HTML template engine", "a red picture", "tools for decision records"]


@pytest.fixture(scope="module")
def model():
    return FLMRModelForRetrieval.from_pretrained(FLMR_TINY).eval()


@pytest.fixture(scope="module")
def embeddings(ray_cluster, collection_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("run") / "embeddings"
    parts = encode_collection(
        collection_file,
        output,
        str(FLMR_TINY),
        workers=2,
        batch_size=8,
        rows_per_part=ROWS_PER_PART,
        doc_maxlen=64,
        image_root=collection_file.parent,
        show_progress=False,
    )
    return parts


@pytest.fixture(scope="module")
def query_vectors(model):
    return Retriever(model).encode_queries(QUERIES)


@pytest.fixture(scope="module")
def sharded(embeddings, tmp_path_factory):
    return build_sharded_index(
        embeddings,
        tmp_path_factory.mktemp("idx") / "sharded",
        num_shards=2,
        num_partitions=32,
        kmeans_iterations=8,
    )


@pytest.fixture(scope="module")
def single(embeddings, sharded, tmp_path_factory):
    """One index over the same documents, compressed with the shards' codec."""
    codec = Index.load(sharded / "shard-00000").codec
    path = tmp_path_factory.mktemp("idx") / "single"
    chunks = embeddings.iter_chunks(0, embeddings.num_documents, docs_per_chunk=10)
    return IndexWriter(nbits=2, codec=codec).write(path, chunks, encoder=embeddings.encoder())


def test_parts_hold_what_the_single_process_encoder_gives(embeddings, model, collection_file):
    documents = read_collection(collection_file, collection_file.parent)
    assert embeddings.num_documents == len(documents) == 58
    stats = embeddings.stats()
    assert len(stats) >= 4 and sum(s["documents"] for s in stats) == 58  # parts of at most 16 rows
    assert max(s["documents"] for s in stats) <= ROWS_PER_PART
    assert len({s["worker"] for s in stats}) == 2  # both actors took parts
    assert all(s["finished"] >= s["started"] for s in stats)
    encoder = DocumentEncoder(
        model,
        batch_size=8,
        doc_maxlen=64,
        image_processor=load_image_processor(model.config),
        show_progress=False,
    )
    expected = encoder.encode(documents)
    chunk = next(embeddings.iter_chunks(0, len(documents), docs_per_chunk=len(documents)))
    assert chunk.doclens.tolist() == [v.shape[0] for v in expected]
    torch.testing.assert_close(chunk.embeddings.float(), torch.cat(expected).float(), atol=2e-3, rtol=0)
    stored = chunk.documents
    assert [d["id"] for d in stored] == [d.id for d in documents]
    assert stored[3]["metadata"] == documents[3].metadata and "package" in stored[3]["metadata"]
    assert stored[-1]["image_path"] == str(collection_file.parent / "blue.png")
    assert embeddings.encoder()["checkpoint"] == str(FLMR_TINY)


def test_resume_encodes_only_the_missing_part(embeddings, collection_file):
    parts = sorted(embeddings.root.glob("parts/part-*"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts}
    shutil.rmtree(parts[1])
    resumed = encode_collection(
        collection_file,
        embeddings.root,
        str(FLMR_TINY),
        batch_size=8,
        rows_per_part=ROWS_PER_PART,
        doc_maxlen=64,
        image_root=collection_file.parent,
        show_progress=False,
    )
    after = {p.name: p.stat().st_mtime_ns for p in resumed.parts}
    assert sorted(after) == sorted(mtimes)
    assert [name for name in after if after[name] != mtimes[name]] == [parts[1].name]
    with pytest.raises(CollectionError, match="another encoding run"):
        encode_collection(
            collection_file, embeddings.root, str(FLMR_TINY), doc_maxlen=32, show_progress=False
        )


def test_sharded_exact_search_equals_the_single_index(sharded, single, query_vectors):
    manifest = json.loads((sharded / "shards.json").read_text())
    assert [s["num_documents"] for s in manifest["shards"]] == [29, 29]
    expected = ExactSearcher(single).search(query_vectors, k=10)
    got = ShardedSearcher(sharded, exact=True).search(query_vectors, k=10)
    for want, have in zip(expected, got, strict=True):
        assert [h.pid for h in have] == [h.pid for h in want]
        assert [h.rank for h in have] == list(range(1, 11))
        torch.testing.assert_close(
            torch.tensor([h.score for h in have]), torch.tensor([h.score for h in want]), atol=1e-6, rtol=0
        )


def test_sharded_plaid_equals_the_single_index_when_candidates_are_not_limiting(
    sharded, single, query_vectors
):
    settings = {"ndocs": 1024, "ncells": 32, "centroid_score_threshold": -1.0}
    expected = PlaidSearcher(single, **settings).search(query_vectors, k=8)
    got = ShardedSearcher(sharded, **settings).search(query_vectors, k=8)
    for want, have in zip(expected, got, strict=True):
        assert [h.pid for h in have] == [h.pid for h in want]
        assert [h.score for h in have] == pytest.approx([h.score for h in want], abs=1e-6)


def test_ray_actors_give_the_in_process_merge(sharded, single, query_vectors):
    searcher = RayShardedSearcher(sharded, exact=True, cpus_per_actor=0.25)
    try:
        local = ShardedSearcher(sharded, exact=True).search(query_vectors, k=5, return_documents=True)
        remote = searcher.search(query_vectors, k=5, return_documents=True)
        assert [[(h.pid, h.rank, h.score, h.document.id) for h in q] for q in remote] == [
            [(h.pid, h.rank, h.score, h.document.id) for h in q] for q in local
        ]
        top = remote[0][0]
        assert searcher.document(top.pid).id == single.document(top.pid).id == top.document.id
    finally:
        searcher.close()


def test_one_shard_is_a_plain_index(embeddings, single, tmp_path, query_vectors):
    path = build_sharded_index(embeddings, tmp_path / "one", num_shards=1, num_partitions=32, use_ray=False)
    index = Index.load(path)
    assert index.num_documents == single.num_documents and not (path / "shards.json").exists()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def test_serve_runs_the_service_app_over_the_shards(sharded, query_vectors):
    """`serve --ray` deploys the app of `flmr serve`: search equals the sharded searcher's, and filters,
    hybrid fusion, explanations, lookups by id, info and the page work over the shards."""
    from ray import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve_sharded_index(
        sharded, host="127.0.0.1", port=port, exact=True, cpus_per_replica=0.25, router_cpus=0.25
    )
    base = f"http://127.0.0.1:{port}"
    try:
        body = _get(f"{base}/api/search?q={urllib.request.quote(QUERIES[1])}&k=4")
        expected = ShardedSearcher(sharded, exact=True).search(query_vectors[1:2], k=4)[0]
        assert [r["pid"] for r in body["results"]] == [h.pid for h in expected]
        assert [r["score"] for r in body["results"]] == pytest.approx([h.score for h in expected], abs=1e-5)
        top = _get(f"{base}/api/documents/{expected[0].pid}")
        assert top["id"] == body["results"][0]["id"]
        assert _get(f"{base}/api/documents/by-id/{urllib.request.quote(top['id'])}")["pid"] == expected[0].pid

        package = top["metadata"]["package"]
        filtered = _post(f"{base}/api/search", {"query": QUERIES[1], "k": 5, "filter": {"package": package}})
        assert [r["id"] for r in filtered["results"]] == [top["id"]]

        fused = _post(f"{base}/api/search", {"query": package, "k": 3, "hybrid_weight": 1.0})
        assert fused["results"][0]["metadata"]["package"] == package  # BM25 alone finds its own name

        explained = _post(f"{base}/api/search", {"query": QUERIES[1], "k": 2, "explain": True})
        for hit in explained["results"]:
            contributions = sum(match["contribution"] for match in hit["explanation"]["matches"])
            assert contributions == pytest.approx(hit["score"], abs=1e-3)

        info = _get(f"{base}/api/info")
        assert info["num_documents"] == ShardedSearcher(sharded).num_documents and info["search"] == "exact"
        with urllib.request.urlopen(f"{base}/", timeout=60) as response:
            assert b"<html" in response.read().lower()
    finally:
        serve.delete("flmr")


def test_flmr_index_with_ray_resumes_and_writes_shards(embeddings, single, collection_file, tmp_path, capsys):
    output = tmp_path / "cli_index"
    # an interrupted earlier run: every part but one is finished
    shutil.copytree(embeddings.root, tmp_path / "cli_index.embeddings")
    shutil.rmtree(sorted((tmp_path / "cli_index.embeddings" / "parts").glob("part-*"))[-1])
    argv = [
        "index",
        "--checkpoint",
        str(FLMR_TINY),
        "--collection",
        str(collection_file),
        "--output",
        str(output),
    ]
    options = ["--ray", "local", "--shards", "2", "--batch-size", "8", "--doc-maxlen", "64", "--quiet"]
    assert main([*argv, *options]) == 0
    assert "into " + str(output) + " as 2 shards with 1 Ray workers" in capsys.readouterr().out
    searcher = ShardedSearcher(output)
    assert [s.num_documents for s in searcher.shards] == [29, 29]
    assert [searcher.document(pid).id for pid in (0, 57)] == [single.document(0).id, "image-blue"]
    assert not (tmp_path / "cli_index.embeddings").exists()
