"""Collections -> per-document vectors: forms, ordering, dynamic padding, images, chunks and resume."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from flmr.encoding import CollectionError, DocumentEncoder, QueryEncoder, read_collection
from helpers import DOCUMENTS, tiny_config

PROCESSOR = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def reference_vectors(model, texts, **kwargs):
    enc = model.context_tokenizer(texts, max_length=512)
    with torch.no_grad():
        return model.doc(
            enc["input_ids"], enc["attention_mask"], keep_dims=False, **kwargs
        ).late_interaction_output


def write_images(folder, count):
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray((np.random.default_rng(i).random((40, 48, 3)) * 255).astype("uint8")).save(path)
        paths.append(path.name)
    return paths


def test_collection_forms_read_to_the_same_documents(tmp_path):
    rows = [{"id": f"p{i}", "text": t, "metadata": {"n": i}, "lang": "en"} for i, t in enumerate(DOCUMENTS)]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    from_rows, from_file = read_collection(rows), read_collection(jsonl)
    assert [d.id for d in from_file] == ["p0", "p1", "p2", "p3"]
    assert from_file[2].metadata == {"n": 2, "lang": "en"} and from_rows == from_file
    tuples = read_collection([(t, None, f"{i}.png") for i, t in enumerate(DOCUMENTS)], image_root=tmp_path)
    assert tuples[1].image_path == str(tmp_path / "1.png") and tuples[1].modality == "image_path"
    features = read_collection([("a", np.ones(24), None)])
    assert features[0].modality == "image_features"


@pytest.mark.parametrize(
    ("collection", "message"),
    [
        ([], "empty"),
        ([3], "item 0 is a int"),
        ([{"id": "a"}], "item 0 \\(id 'a'\\) has no text"),
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "share the id 'a'"),
        ([("a", np.ones((2, 3)), None)], "must be one vector"),
    ],
)
def test_bad_collections_name_the_item(collection, message):
    with pytest.raises(CollectionError, match=message):
        read_collection(collection)


def test_dynamic_padding_gives_the_same_vectors_in_collection_order(make_model):
    model = make_model(tiny_config())
    texts = DOCUMENTS + ["short.", "a much longer document " * 10]
    vectors = DocumentEncoder(model, batch_size=3, show_progress=False).encode(read_collection(texts))
    for got, want in zip(vectors, reference_vectors(model, texts), strict=True):
        assert got.dtype == torch.float16
        assert got.shape == want.shape
        assert torch.allclose(got.float(), want, atol=2e-3)


@pytest.mark.parametrize("max_batch_tokens", [None, 40])
def test_token_budget_batches_give_the_same_vectors(make_model, max_batch_tokens):
    model = make_model(tiny_config())
    texts = DOCUMENTS + ["short.", "a much longer document " * 10]
    encoder = DocumentEncoder(model, batch_size=4, max_batch_tokens=max_batch_tokens, show_progress=False)
    vectors = encoder.encode(read_collection(texts))
    for got, want in zip(vectors, reference_vectors(model, texts), strict=True):
        assert torch.allclose(got.float(), want, atol=2e-3)


def test_batches_close_at_the_document_or_token_limit(make_model):
    model = make_model(tiny_config())
    texts = [f"document {'word ' * n}" for n in (1, 30, 2, 12, 3, 25, 4, 5, 6)]
    documents = read_collection(texts)
    encoder = DocumentEncoder(model, batch_size=3, max_batch_tokens=64, show_progress=False)
    counts = encoder._token_counts(documents)
    batches = encoder._plan_batches(documents)
    assert sorted(p for batch in batches for p in batch) == list(range(len(texts)))
    flat = [p for batch in batches for p in batch]
    assert [counts[p] for p in flat] == sorted(counts, reverse=True)  # longest first
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * counts[batch[0]] <= 64
    # "document" + n words + [CLS] [D] [SEP]: 34, 29, 16, 10, 9, 8, 7, 6, 5 tokens; 2 x 34 > 64 closes the
    # first batch, 3 x 29 > 64 the second, then the 3-document cap
    assert [counts[p] for p in flat] == [34, 29, 16, 10, 9, 8, 7, 6, 5]
    assert [len(batch) for batch in batches] == [1, 2, 3, 3]


def test_documents_with_image_paths_and_features(tmp_path, make_model):
    model = make_model(tiny_config())
    names = write_images(tmp_path, len(DOCUMENTS))
    docs = read_collection([(t, None, n) for t, n in zip(DOCUMENTS, names, strict=True)], image_root=tmp_path)
    vectors = DocumentEncoder(model, batch_size=2, image_processor=PROCESSOR, show_progress=False).encode(
        docs
    )
    pixels = PROCESSOR([Image.open(tmp_path / n).convert("RGB") for n in names], return_tensors="pt")[
        "pixel_values"
    ]
    expected = reference_vectors(
        model, DOCUMENTS, pixel_values=pixels, concat_output_from_vision_encoder=True
    )
    for got, want in zip(vectors, expected, strict=True):
        assert torch.allclose(got.float(), want, atol=2e-3)
    features = torch.randn(len(DOCUMENTS), 24)
    docs = read_collection([(t, f.numpy(), None) for t, f in zip(DOCUMENTS, features, strict=True)])
    vectors = DocumentEncoder(model, show_progress=False).encode(docs)
    expected = reference_vectors(
        model, DOCUMENTS, image_features=features, concat_output_from_vision_encoder=True
    )
    assert all(torch.allclose(g.float(), w, atol=2e-3) for g, w in zip(vectors, expected, strict=True))


def test_missing_and_unreadable_images_name_the_document(tmp_path, make_model):
    model = make_model(tiny_config())
    (tmp_path / "bad.png").write_text("not an image")
    encoder = DocumentEncoder(model, image_processor=PROCESSOR, show_progress=False)
    with pytest.raises(CollectionError, match="document '0': image file .*missing.png' does not exist"):
        encoder.encode(read_collection([("a", None, str(tmp_path / "missing.png"))]))
    with pytest.raises(CollectionError, match="document '0': .*cannot be read"):
        encoder.encode(read_collection([("a", None, str(tmp_path / "bad.png"))]))
    with pytest.raises(CollectionError, match="pass an image_processor"):
        DocumentEncoder(model, show_progress=False).encode(read_collection([("a", None, "x.png")]))


def test_chunks_resume_after_an_interrupted_run(tmp_path, make_model, monkeypatch):
    model = make_model(tiny_config())
    docs = read_collection(DOCUMENTS * 3)
    encoder = DocumentEncoder(model, batch_size=4, show_progress=False)
    calls = []
    original = encoder.encode

    def dies_on_third_chunk(chunk_docs):
        calls.append(len(chunk_docs))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(chunk_docs)

    monkeypatch.setattr(encoder, "encode", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        list(encoder.encode_to_chunks(docs, tmp_path, chunk_size=5))
    assert sorted(p.name for p in tmp_path.glob("chunk_*")) == [
        "chunk_00000.safetensors",
        "chunk_00001.safetensors",
    ]
    calls.clear()
    chunks = list(encoder.encode_to_chunks(docs, tmp_path, chunk_size=5))
    assert calls == [2]  # only the unfinished last chunk is encoded again
    assert [c.first_document for c in chunks] == [0, 5, 10]
    vectors = [v for c in chunks for v in c.split()]
    assert all(torch.equal(a, b) for a, b in zip(vectors, original(docs), strict=True))
    with pytest.raises(CollectionError, match="another encoding run"):
        list(DocumentEncoder(model, doc_maxlen=16).encode_to_chunks(docs, tmp_path, chunk_size=5))


def test_resumed_chunks_are_encoded_again_when_their_documents_changed(tmp_path, make_model, monkeypatch):
    model = make_model(tiny_config())
    encoder = DocumentEncoder(model, batch_size=4, show_progress=False)
    original = encoder.encode
    list(encoder.encode_to_chunks(read_collection(DOCUMENTS * 3), tmp_path, chunk_size=5))
    edited = DOCUMENTS * 3
    edited[7] = "an edited text, with other words than before"  # same ids, chunk 1 changed
    calls = []
    monkeypatch.setattr(encoder, "encode", lambda docs: calls.append(len(docs)) or original(docs))
    chunks = list(encoder.encode_to_chunks(read_collection(edited), tmp_path, chunk_size=5))
    assert calls == [5]  # only the chunk holding the edited document
    vectors = [v for c in chunks for v in c.split()]
    assert all(torch.equal(a, b) for a, b in zip(vectors, original(read_collection(edited)), strict=True))
    assert not torch.equal(vectors[7], original(read_collection(DOCUMENTS * 3))[7])


def test_query_encoder_mixes_queries_with_and_without_images(tmp_path, make_model):
    model = make_model(tiny_config())
    names = write_images(tmp_path, 1)
    encoder = QueryEncoder(model, image_processor=PROCESSOR, batch_size=1)
    Q = encoder.encode(["what is this?", "who built it?"], images=[tmp_path / names[0], None])
    assert Q.shape == (2, 36, 16)
    assert (Q[1, 32:] == 0).all() and (Q[0, 32:].abs().sum(-1) > 0).all()
    text_only = encoder.encode(["what is this?", "who built it?"])
    assert torch.allclose(Q[:, :32], text_only, atol=1e-6)
    with pytest.raises(CollectionError, match="1 images for 2 queries"):
        encoder.encode(["a", "b"], images=[None])


def test_fingerprint_ignores_folder_and_dtype_but_not_weights(make_model):
    import flmr
    from flmr.encoding import model_fingerprint, same_encoder
    from helpers import FLMR_TINY

    absolute = flmr.FLMRModelForRetrieval.from_pretrained(FLMR_TINY)
    assert absolute.config._name_or_path == str(FLMR_TINY)
    relative = flmr.FLMRModelForRetrieval.from_pretrained(os.path.relpath(FLMR_TINY), dtype=torch.bfloat16)
    retrained = flmr.FLMRModelForRetrieval.from_pretrained(FLMR_TINY)
    with torch.no_grad():
        retrained.context_text_encoder_linear.weight.mul_(1.5)
    reference = model_fingerprint(absolute)
    assert same_encoder(reference, model_fingerprint(relative))
    assert not same_encoder(reference, model_fingerprint(retrained))
    other = make_model(tiny_config(), seed=1)  # seed 0 would rebuild FLMR_TINY itself
    assert not same_encoder(reference, model_fingerprint(other))
