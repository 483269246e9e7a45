"""Explanations: which document vector each query vector matched, and contributions that sum to the score.

The retriever wraps the real MiniLM text encoder (random linear map, tiny random vision encoder), so
that a word of the query finds the same word in a document, as a trained model does.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from flmr.data import SAMPLE_COLLECTION
from flmr.encoding import DocumentEncoder, read_collection
from flmr.model.initialization import retriever_from_text_encoder
from flmr.retrieval import Retriever
from flmr.search import explain_document
from helpers import TINY_VISION, minilm_folder

PROCESSOR = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
PREFIX = 4
NUM_TEXT_DOCUMENTS = 20
QUERY = "Which text editor can I use in a terminal?"


def write_image(path, seed):
    Image.fromarray((np.random.default_rng(seed).random((40, 48, 3)) * 255).astype("uint8")).save(path)
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain")
    model = retriever_from_text_encoder(
        minilm_folder(),
        dim=32,
        use_vision_encoder=True,
        vision_config=TINY_VISION,
        mapping_network_prefix_length=PREFIX,
    )
    retriever = Retriever(model, image_processor=PROCESSOR)
    images = {name: write_image(folder / f"{name}.png", seed) for seed, name in enumerate("abcd")}
    rows = [json.loads(line) for line in SAMPLE_COLLECTION.read_text().splitlines()[:NUM_TEXT_DOCUMENTS]]
    rows += [
        {
            "id": "two-images",
            "text": "Two photos: a cat, and a dog.",
            "image_paths": [images["a"], images["b"]],
        },
        {"id": "only-c", "image_paths": [images["c"]]},
        {"id": "only-d", "image_path": images["d"]},
    ]
    index = retriever.index(rows, folder / "index", nbits=2, show_progress=False, doc_maxlen=64)
    return retriever, index, images


def pid_of(index, document_id):
    return next(pid for pid in range(index.num_documents) if index.document(pid).id == document_id)


@pytest.mark.parametrize("exact", [False, True])
def test_contributions_sum_to_the_score_the_search_reports(setup, exact):
    retriever, index, images = setup
    queries = [QUERY, "a fast web server", None]
    results = retriever.search(
        queries, index, k=6, images=[None, images["a"], images["c"]], exact=exact, explain=True
    )
    Q = retriever.encode_queries(queries, images=[None, images["a"], images["c"]])
    for q, hits in enumerate(results):
        counted = int((Q[q].abs().amax(dim=-1) > 0).sum())
        for hit in hits:
            explanation = hit.explanation
            contributions = [m.contribution for m in explanation.matches]
            assert explanation.pid == hit.pid
            assert len(contributions) == len(explanation.query_tokens) == counted
            assert abs(sum(contributions) - hit.score) < 1e-5
            assert abs(explanation.score - hit.score) < 1e-5
            assert abs(sum(explanation.document_contributions) - hit.score) < 1e-5
            assert len(explanation.document_tokens) == int(index.doclens[hit.pid])
            for match in explanation.matches:  # each query vector's match is its best document vector
                assert (
                    explanation.document_contributions[match.document.position] >= match.contribution - 1e-6
                )


def test_hits_without_explain_are_unchanged(setup):
    retriever, index, _ = setup
    plain = retriever.search(QUERY, index, k=5)[0]
    explained = retriever.search(QUERY, index, k=5, explain=True)[0]
    assert all(hit.explanation is None for hit in plain)
    assert [(h.pid, h.score, h.rank, h.document) for h in plain] == [
        (h.pid, h.score, h.rank, h.document) for h in explained
    ]


def test_explain_a_hit_or_a_pid_encodes_the_query_again(setup):
    retriever, index, _ = setup
    hits = retriever.search(QUERY, index, k=3)[0]
    for hit in hits:
        by_hit = retriever.explain(QUERY, hit, index)
        by_pid = retriever.explain(QUERY, hit.pid, index)
        assert abs(by_hit.score - hit.score) < 1e-5 and by_pid.score == by_hit.score
    many = retriever.explain_hits(QUERY, hits, index)
    assert [e.pid for e in many] == [h.pid for h in hits]


def test_a_query_word_the_document_contains_matches_that_word(setup):
    retriever, index, _ = setup
    pid = pid_of(index, "micro")
    text = index.document(pid).text
    explanation = retriever.explain(QUERY, pid, index)
    by_word = {m.query.label: m for m in explanation.matches if m.query.kind == "text"}
    for word in ("text", "editor", "terminal"):
        match = by_word[word]
        assert match.document.label == word
        assert text[match.document.start : match.document.end].lower() == word
        assert match.contribution > 0.5


def test_labels_name_query_markers_expansion_tokens_and_document_tokens(setup):
    retriever, index, _ = setup
    pid = pid_of(index, "two-images")
    explanation = retriever.explain("a cat?", pid, index)
    query_labels = [t.label for t in explanation.query_tokens]
    assert (
        query_labels[:5] == ["[CLS]", "[Q]", "a", "cat", "?"]
        and query_labels[5:] == ["[SEP]"] + ["[MASK]"] * 26
    )
    assert [t.position for t in explanation.query_tokens] == list(range(32))
    labels = [t.label for t in explanation.document_tokens]
    assert labels == ["image 1"] * PREFIX + ["image 2"] * PREFIX + [
        "[CLS]",
        "[D]",
        "two",
        "photos",
        "a",
        "cat",
        "and",
        "a",
        "dog",
        "[SEP]",
    ]
    as_dict = json.loads(json.dumps(explanation.to_dict()))
    cat = next(t for t in as_dict["document_tokens"] if t["label"] == "cat")
    assert cat["best_query"] == "cat" and cat["contribution"] > 0.5
    assert (cat["start"], cat["end"]) == (14, 17)
    assert len(as_dict["matches"]) == 32 and as_dict["matches"][3]["document"] == cat["position"]
    assert explanation.top_matches(1)[0].contribution == max(m.contribution for m in explanation.matches)


def test_image_only_documents_are_found_by_an_image_only_query(setup, tmp_path):
    retriever, mixed, images = setup
    # Among text documents the 29 [MASK] vectors of an image-only query find more text to match than the
    # 3 special tokens of an image-only document, so image documents are searched on their own here.
    rows = [{"id": f"only-{name}", "image_path": path} for name, path in images.items()]
    index = retriever.index(rows, tmp_path / "images", nbits=2, show_progress=False)
    for exact in (False, True):
        hits = retriever.search(None, index, k=4, images=[images["c"]], exact=exact, explain=True)[0]
        assert hits[0].document.id == "only-c" and hits[0].document.text == ""
        assert hits[0].score - hits[1].score > 0.1
        explanation = hits[0].explanation
        image_matches = [m for m in explanation.matches if m.query.kind == "image"]
        assert [m.query.label for m in image_matches] == [f"image {i}" for i in range(1, PREFIX + 1)]
        assert {m.document.label for m in image_matches} == {"image 1"}
        assert [t.label for t in explanation.document_tokens[PREFIX:]] == ["[CLS]", "[D]", "[SEP]"]
    ranking = [
        h.document.id for h in retriever.search(None, mixed, k=30, images=[images["c"]], exact=True)[0]
    ]
    assert ranking.index("only-c") < ranking.index("only-d")


def test_an_image_query_matches_the_block_of_the_same_image(setup):
    retriever, index, images = setup
    pid = pid_of(index, "two-images")
    for image, block in ((images["a"], 1), (images["b"], 2)):
        explanation = retriever.explain(None, pid, index, images=image)
        image_matches = [m for m in explanation.matches if m.query.kind == "image"]
        assert {(m.document.kind, m.document.image) for m in image_matches} == {("image", block)}
        assert min(m.contribution for m in image_matches) > 0.8


def test_documents_added_without_a_layout_are_labelled_by_their_text(setup, tmp_path):
    retriever, index, _ = setup
    text = "A small, friendly text editor."
    vectors = DocumentEncoder(retriever.model, show_progress=False).encode(read_collection([text]))
    [pid] = index.add(vectors, documents=[{"id": "legacy", "text": text}])
    try:
        explanation = retriever.explain("which editor?", pid, index)
        labels = [t.label for t in explanation.document_tokens]
        assert labels == ["[CLS]", "[D]", "a", "small", "friendly", "text", "editor", "[SEP]"]
    finally:
        index.delete([pid])
    with pytest.raises(ValueError, match="was deleted"):
        retriever.explain("which editor?", pid, index)


def test_bad_inputs_are_refused(setup):
    retriever, index, _ = setup
    with pytest.raises(ValueError, match=r"query_vectors must be \(q_len, 32\)"):
        explain_document(index, 0, torch.ones(3, 8))
    with pytest.raises(IndexError, match="out of range"):
        explain_document(index, index.num_documents, torch.ones(3, 32))
    with pytest.raises(ValueError, match="explain takes one query"):
        retriever.explain_hits(["a", "b"], [0], index)
    plain = explain_document(index, 0, torch.ones(2, 32))
    assert [t.label for t in plain.query_tokens] == ["vector 0", "vector 1"]
