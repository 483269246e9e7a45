"""The seed package's indexing/search functions and the Retriever, end to end on a tiny checkpoint."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

import flmr
from flmr.data import SAMPLE_COLLECTION
from flmr.index import IndexExistsError
from flmr.retrieval import EncoderMismatchError, Retriever
from helpers import FLMR_TINY, tiny_config

COLLECTION = [json.loads(line)["text"] for line in SAMPLE_COLLECTION.read_text().splitlines()[:80]]


@pytest.fixture(scope="module")
def model():
    return flmr.FLMRModelForRetrieval.from_pretrained(FLMR_TINY).eval()


@pytest.fixture(scope="module")
def seed_index(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("indexes")
    path = flmr.index_custom_collection(
        custom_collection=COLLECTION,
        model=model,
        index_root_path=root,
        index_experiment_name="test_experiment",
        index_name="test_index",
        nbits=2,
        doc_maxlen=64,
        overwrite=True,
        use_gpu=False,
        indexing_batch_size=16,
        model_temp_folder="tmp",
        nranks=1,
    )
    return root, path


def encode(model, texts):
    with torch.no_grad():
        return model.query(**model.query_tokenizer(texts)).late_interaction_output


def test_seed_example_flow_returns_the_original_ranking_format(model, seed_index):
    root, path = seed_index
    assert path == root / "test_experiment" / "indexes" / "test_index.nbits=2"
    searcher = flmr.create_searcher(
        index_root_path=root,
        index_experiment_name="test_experiment",
        index_name="test_index",
        nbits=2,
        use_gpu=False,
    )
    queries = {7: "Common Lisp FTP library", 9: "Document (PostScript, PDF) viewer"}
    ranking = flmr.search_custom_collection(
        searcher=searcher,
        queries=queries,
        query_embeddings=encode(model, list(queries.values())),
        num_document_to_retrieve=5,
    )
    results = ranking.todict()
    assert list(results) == [7, 9]
    for rows in results.values():
        assert [rank for _, rank, _ in rows] == [1, 2, 3, 4, 5]
        scores = [score for _, _, score in rows]
        assert scores == sorted(scores, reverse=True)
        assert all(0 <= pid < len(COLLECTION) for pid, _, _ in rows)


def test_plaid_top5_is_close_to_exact_maxsim(model, seed_index):
    _, path = seed_index
    retriever = Retriever(model)
    texts = COLLECTION[:20]
    approximate = retriever.search(texts, path, k=10)
    exact = retriever.search(texts, path, k=5, exact=True)
    overlap = np.mean(
        [len({h.pid for h in e} & {h.pid for h in a}) / 5 for e, a in zip(exact, approximate, strict=True)]
    )
    assert overlap >= 0.8
    assert exact[0][0].document.text == texts[0]  # a document is its own best match


def test_existing_index_without_overwrite_is_an_error(model, seed_index):
    root, _ = seed_index
    with pytest.raises(IndexExistsError, match="overwrite=True"):
        flmr.index_custom_collection(COLLECTION[:3], model, root, "test_experiment", "test_index", nbits=2)


def test_checkpoint_path_indexes_like_the_model_object(model, tmp_path):
    by_path = flmr.index_custom_collection(COLLECTION[:10], str(FLMR_TINY), tmp_path, "e", "a", nbits=2)
    by_object = flmr.index_custom_collection(COLLECTION[:10], model, tmp_path, "e", "b", nbits=2)
    assert not (tmp_path / "tmp").exists()
    Q = encode(model, ["Common Lisp FTP library"])
    hits = [flmr.create_searcher(tmp_path, "e", name, nbits=2).search(Q, k=3)[0] for name in ("a", "b")]
    assert [h.pid for h in hits[0]] == [h.pid for h in hits[1]]
    assert by_path.parent == by_object.parent


def test_retriever_stores_documents_adds_and_deletes(model, tmp_path):
    rows = [{"id": f"doc-{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(COLLECTION[:30])]
    retriever = Retriever(model)
    index = retriever.index(rows, tmp_path / "idx", nbits=2, show_progress=False)
    hit = retriever.search(COLLECTION[4], index, k=1, exact=True)[0][0]
    assert (hit.document.id, hit.document.metadata) == ("doc-4", {"n": 4})
    new = retriever.add(index, [{"id": "new", "text": "zebra quantum marmalade orchestra xylophone"}])
    assert list(new) == [30]
    assert (
        retriever.search("zebra quantum marmalade orchestra xylophone", index, k=1, exact=True)[0][
            0
        ].document.id
        == "new"
    )
    index.delete([30])
    assert all(
        h.pid != 30
        for h in retriever.search("zebra quantum marmalade orchestra xylophone", index, k=5, exact=True)[0]
    )


def test_searching_with_another_checkpoint_is_refused(model, make_model, tmp_path):
    Retriever(model).index(COLLECTION[:5], tmp_path / "idx", nbits=2, show_progress=False)
    other = make_model(tiny_config(), seed=1)  # seed 0 would rebuild FLMR_TINY itself
    with pytest.raises(EncoderMismatchError, match="built with another checkpoint"):
        Retriever(other).search("x", tmp_path / "idx")


def test_text_and_image_documents_and_queries(model, tmp_path):
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    for i in range(6):
        Image.fromarray((np.random.default_rng(i).random((32, 32, 3)) * 255).astype("uint8")).save(
            tmp_path / f"{i}.png"
        )
    collection = [(COLLECTION[i], None, f"{i}.png") for i in range(6)]
    retriever = Retriever(model, image_processor=processor)
    index = retriever.index(collection, tmp_path / "mm", nbits=2, image_root=tmp_path, show_progress=False)
    assert index.document(3).image_path == str(tmp_path / "3.png")
    hits = retriever.search([COLLECTION[2]], index, k=3, images=[tmp_path / "2.png"], exact=True)[0]
    assert len(hits) == 3 and hits[0].score >= hits[-1].score


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_use_gpu_without_cuda_is_an_error_not_a_silent_cpu_run(model, seed_index):
    root, _ = seed_index
    names = {"index_experiment_name": "test_experiment", "index_name": "test_index", "nbits": 2}
    assert flmr.create_searcher(index_root_path=root, use_gpu=False, **names).device.type == "cpu"
    with pytest.raises(RuntimeError, match="use_gpu=True, but CUDA is not available here"):
        flmr.create_searcher(index_root_path=root, use_gpu=True, **names)
    with pytest.raises(RuntimeError, match="pass use_gpu=False to run on the CPU"):
        flmr.index_custom_collection(["a"], model, root, "e", "gpu", nbits=2, use_gpu=True)
