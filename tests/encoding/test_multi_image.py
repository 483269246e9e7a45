"""Documents with several images or none, image-only queries, and the recorded vector layout."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from flmr.encoding import CollectionError, Document, DocumentEncoder, QueryEncoder, read_collection
from flmr.encoding.layout import document_tokens, vector_layout
from helpers import DOCUMENTS, tiny_config, tiny_preflmr_config

PROCESSOR = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
PREFIX = 4  # tiny_config's mapping_network_prefix_length: vectors per image


def write_image(folder, seed):
    path = folder / f"{seed}.png"
    Image.fromarray((np.random.default_rng(seed).random((40, 48, 3)) * 255).astype("uint8")).save(path)
    return str(path)


def pixels(*paths):
    return PROCESSOR([Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]


def model_doc(model, text, **images):
    """What the model's doc() gives one document today (unmasked vectors only)."""
    encoding = model.context_tokenizer([text], max_length=512)
    with torch.no_grad():
        output = model.doc(
            encoding["input_ids"],
            encoding["attention_mask"],
            concat_output_from_vision_encoder=bool(images),
            keep_dims=False,
            **images,
        )
    return output.late_interaction_output[0]


def encoder(model, **kwargs):
    return DocumentEncoder(
        model, image_processor=PROCESSOR, storage_dtype=torch.float32, show_progress=False, **kwargs
    )


def test_rows_with_image_lists_features_and_no_text(tmp_path):
    rows = [
        {"id": "two", "text": "red and blue", "image_paths": ["a.png", "b.png"], "lang": "en"},
        {"id": "alone", "image_paths": ["c.png"]},
        {"id": "first", "image_path": "a.png", "image_paths": ["a.png", "d.png"]},
        {"id": "feats", "image_features": [[1.0] * 24, [2.0] * 24, [3.0] * 24]},
        {"id": "one-feature", "text": "x", "image_features": [0.5] * 24},
    ]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    docs = read_collection(jsonl, image_root=tmp_path)
    assert docs[:3] == read_collection(rows[:3], image_root=tmp_path)
    two, alone, first, feats, one = docs
    assert two.image_paths == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert (two.image_path, two.num_images, two.modality, two.metadata) == (
        two.image_paths[0],
        2,
        "image_path",
        {"lang": "en"},
    )
    assert (alone.text, alone.num_images, alone.image_path) == ("", 1, str(tmp_path / "c.png"))
    assert first.num_images == 2
    assert (feats.text, feats.num_images, feats.modality, feats.feature_rows.shape) == (
        "",
        3,
        "image_features",
        (3, 24),
    )
    assert (one.num_images, one.feature_rows.shape) == (1, (1, 24))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "a", "image_paths": "a.png"}, "image_paths must be a list"),
        ({"id": "a", "image_paths": ["a.png", 3]}, "image_paths must be a list"),
        ({"id": "a", "image_path": "b.png", "image_paths": ["a.png"]}, "disagree"),
        (
            {"id": "a", "image_paths": ["a.png", "b.png"], "image_features": [[1.0] * 4] * 3},
            "3 image_features rows for 2",
        ),
        ({"id": "a", "image_features": [[[1.0]]]}, "one vector or one row per image"),
        ({"id": "a", "image_paths": []}, "has no text and no image"),
    ],
)
def test_bad_image_fields_name_the_item(row, message):
    with pytest.raises(CollectionError, match=message):
        read_collection([row])


def test_single_image_documents_give_exactly_what_doc_gives(tmp_path, make_model):
    model = make_model(tiny_config())
    paths = [write_image(tmp_path, i) for i in range(len(DOCUMENTS))]
    docs = read_collection([(t, None, p) for t, p in zip(DOCUMENTS, paths, strict=True)])
    vectors = encoder(model, batch_size=len(DOCUMENTS)).encode(docs)
    for text, path, got in zip(DOCUMENTS, paths, vectors, strict=True):
        want = model_doc(model, text, pixel_values=pixels(path))
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_a_multi_image_document_is_one_block_per_image_then_its_text(tmp_path, make_model):
    model = make_model(tiny_config())
    a, b, c = (write_image(tmp_path, i) for i in range(3))
    text = DOCUMENTS[0]
    [got] = encoder(model).encode(read_collection([{"id": "d", "text": text, "image_paths": [a, b, c]}]))
    text_only = model_doc(model, text)
    assert got.shape == (3 * PREFIX + text_only.shape[0], 16)
    for i, path in enumerate((a, b, c)):
        alone = model_doc(model, text, pixel_values=pixels(path))
        torch.testing.assert_close(got[i * PREFIX : (i + 1) * PREFIX], alone[:PREFIX], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[3 * PREFIX :], text_only, atol=1e-6, rtol=0)
    assert not torch.equal(got[:PREFIX], got[PREFIX : 2 * PREFIX])


def test_feature_rows_give_the_blocks_of_single_feature_documents(make_model):
    model = make_model(tiny_config())
    features = torch.randn(2, 24)
    [got] = encoder(model).encode(
        read_collection([{"id": "d", "text": "x", "image_features": features.tolist()}])
    )
    for i in range(2):
        alone = model_doc(model, "x", image_features=features[i : i + 1])
        torch.testing.assert_close(got[i * PREFIX : (i + 1) * PREFIX], alone[:PREFIX], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[2 * PREFIX :], model_doc(model, "x"), atol=1e-6, rtol=0)


def test_image_only_documents_hold_their_images_and_the_empty_texts_special_tokens(tmp_path, make_model):
    model = make_model(tiny_config())
    a, b = write_image(tmp_path, 0), write_image(tmp_path, 1)
    docs = read_collection([{"id": "one", "image_path": a}, {"id": "two", "image_paths": [a, b]}])
    one, two = encoder(model).encode(docs)
    want = model_doc(model, "", pixel_values=pixels(a))  # [CLS] [D] [SEP] follow the image block
    assert one.shape == (PREFIX + 3, 16) and two.shape == (2 * PREFIX + 3, 16)
    torch.testing.assert_close(one, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(two[:PREFIX], one[:PREFIX], atol=1e-6, rtol=0)
    torch.testing.assert_close(two[2 * PREFIX :], one[PREFIX:], atol=1e-6, rtol=0)


def test_a_batch_mixing_every_kind_keeps_each_documents_vectors(tmp_path, make_model):
    model = make_model(tiny_config())
    a, b = write_image(tmp_path, 0), write_image(tmp_path, 1)
    rows = [
        {"id": "text", "text": DOCUMENTS[1]},
        {"id": "two", "text": DOCUMENTS[2], "image_paths": [a, b]},
        {"id": "feats", "text": DOCUMENTS[3], "image_features": np.ones((2, 24)).tolist()},
        {"id": "image", "image_path": b},
    ]
    together = encoder(model, batch_size=8).encode(read_collection(rows))
    alone = [encoder(model).encode(read_collection([row]))[0] for row in rows]
    assert [v.shape[0] for v in together] == [v.shape[0] for v in alone]
    for got, want in zip(together, alone, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_layout_names_every_vector(tmp_path, make_model):
    model = make_model(tiny_config())
    a, b = write_image(tmp_path, 0), write_image(tmp_path, 1)
    text = "Paris, the capital (of France)!"
    doc = read_collection([{"id": "d", "text": text, "image_paths": [a, b]}])[0]
    enc = encoder(model, doc_maxlen=64)
    [vectors] = enc.encode([doc])
    layout = enc.layout(doc, vectors.shape[0])
    assert layout == [
        {"kind": "image", "vectors": PREFIX, "source": a},
        {"kind": "image", "vectors": PREFIX, "source": b},
        {"kind": "text", "vectors": 8, "max_length": 64},
    ]
    tokens = document_tokens(text, layout, vectors.shape[0], model.context_tokenizer)
    text_labels = ["[CLS]", "[D]", "paris", "the", "capital", "of", "france", "[SEP]"]  # no punctuation
    assert [t.label for t in tokens] == ["image 1"] * PREFIX + ["image 2"] * PREFIX + text_labels
    assert [t.position for t in tokens] == list(range(vectors.shape[0]))
    assert [t.image for t in tokens[: 2 * PREFIX]] == [1] * PREFIX + [2] * PREFIX
    words = [t for t in tokens if t.kind == "text" and t.start is not None]
    assert [text[t.start : t.end] for t in words] == ["Paris", "the", "capital", "of", "France"]
    with pytest.raises(ValueError, match="fewer than its 2 images"):
        vector_layout(doc, 5, PREFIX, 64)


def test_layout_of_a_truncated_text_and_of_unknown_vectors(make_model):
    model = make_model(tiny_config())
    text = "one two three four five six seven eight nine ten"
    [vectors] = DocumentEncoder(model, doc_maxlen=6, show_progress=False).encode([Document("d", text)])
    layout = vector_layout(Document("d", text), vectors.shape[0], PREFIX, 6)
    labels = [t.label for t in document_tokens(text, layout, vectors.shape[0], model.context_tokenizer)]
    assert labels == ["[CLS]", "[D]", "one", "two", "three", "[SEP]"]
    # Without a stored layout it is inferred when the count fits; otherwise vectors keep their position.
    short = "red car"
    assert [t.label for t in document_tokens(short, None, 5, model.context_tokenizer)][2:4] == ["red", "car"]
    image_first = document_tokens(
        short, None, PREFIX + 5, model.context_tokenizer, image_block=PREFIX, has_image=True
    )
    assert [t.kind for t in image_first] == ["image"] * PREFIX + ["text"] * 5
    assert [t.label for t in document_tokens(short, None, 9, model.context_tokenizer)] == [
        f"vector {i}" for i in range(9)
    ]


def test_image_only_queries(tmp_path, make_model):
    model = make_model(tiny_config())
    image = write_image(tmp_path, 0)
    queries = QueryEncoder(model, PROCESSOR)
    absent = queries.encode([None], images=[image])
    torch.testing.assert_close(absent, queries.encode([""], images=[image]))
    torch.testing.assert_close(absent, queries.encode(["   "], images=[image]))
    assert absent.shape == (1, 32 + PREFIX, 16) and bool(absent[0, 32:].abs().sum() > 0)
    mixed = queries.encode(["what is this?", None], images=[image, image])
    torch.testing.assert_close(mixed[1], absent[0], atol=1e-6, rtol=0)
    with pytest.raises(CollectionError, match="query 1 has neither text nor an image"):
        queries.encode(["a", None], images=[image, None])
    labels = queries.vector_labels(None, absent.shape[1], has_image=True)
    assert labels[:4] == [("text", "[CLS]"), ("text", "[Q]"), ("text", "[SEP]"), ("text", "[MASK]")]
    assert labels[32:] == [("image", f"image {i}") for i in range(1, PREFIX + 1)]


def test_preflmr_image_only_queries_read_an_empty_instruction(tmp_path, make_model, caplog):
    model = make_model(tiny_preflmr_config())
    image = write_image(tmp_path, 0)
    queries = QueryEncoder(model, PROCESSOR)
    assert queries.query_text(None, has_image=True) == ":"
    vectors = queries.encode([None], images=[image])
    assert "no instruction token" not in caplog.text
    labels = queries.vector_labels(None, vectors.shape[1], has_image=True)
    assert labels[2] == ("instruction", ":") and bool(vectors[0, 2].abs().sum() == 0)  # masked as instruction
    patches = (32 // 8) ** 2
    assert labels[32:] == [("image", f"image {i}") for i in range(1, PREFIX + 1)] + [
        ("image", f"image patch {j}") for j in range(1, patches + 1)
    ]
