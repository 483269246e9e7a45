"""Query/document encoding rules of the spec on tiny random models with the real vocab."""

import pytest
import torch

from helpers import DOCUMENTS, QUERIES, tiny_config, tiny_preflmr_config

PREFIX = 4  # mapping_network_prefix_length of the tiny configs
PATCHES = 16  # (32 / 8) ** 2 patches of the tiny vision encoder


def encode_queries(model, texts=QUERIES, **kwargs):
    enc = model.query_tokenizer(texts)
    with torch.no_grad():
        return model.query(enc["input_ids"], enc["attention_mask"], **kwargs), enc


def encode_docs(model, texts=DOCUMENTS, **kwargs):
    enc = model.context_tokenizer(texts, max_length=40)
    with torch.no_grad():
        return model.doc(enc["input_ids"], enc["attention_mask"], **kwargs), enc


def zero_rows(vectors):
    return vectors.abs().sum(-1) == 0


def test_text_only_query_masks_skip_list_and_keeps_mask_padding(make_model):
    comma = 1010
    model = make_model(tiny_config(query_mask_input_ids_skip_list=[comma]))
    out, enc = encode_queries(model)
    Q, ids = out.late_interaction_output, enc["input_ids"]
    assert Q.shape == (2, 32, 16)
    assert torch.equal(zero_rows(Q), ids == comma)
    norms = Q.norm(dim=-1)[ids != comma]
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert (ids == 103).any()  # the [MASK] padding is present and kept


def test_instruction_token_masks_everything_before_the_first_colon(make_model):
    model = make_model(tiny_preflmr_config())
    out, enc = encode_queries(model, ["obtain documents: what is this? a: b", "no colon here"])
    Q, ids = out.late_interaction_output, enc["input_ids"]
    colon = model.query_tokenizer.convert_tokens_to_ids(":")
    first_colon = int((ids[0] == colon).nonzero()[0])
    expected_zero = torch.zeros(32, dtype=torch.bool)
    expected_zero[2 : first_colon + 1] = True
    assert torch.equal(zero_rows(Q[0]), expected_zero)
    # without the token, the position falls back to 1: nothing of the text is masked
    assert not zero_rows(Q[1]).any()


def test_document_mask_drops_punctuation_and_padding(make_model):
    model = make_model(tiny_config())
    out, enc = encode_docs(model)
    ids, mask = enc["input_ids"], out.context_mask.squeeze(-1)
    punctuation = {model.context_tokenizer.encode(c, add_special_tokens=False)[0] for c in "!,.;&()-"}
    is_punct = torch.isin(ids, torch.tensor(sorted(punctuation)))
    assert torch.equal(mask, (ids != 0) & ~is_punct)
    assert is_punct.any()
    assert torch.equal(zero_rows(out.late_interaction_output), ~mask)
    assert torch.allclose(out.pooler_output, out.late_interaction_output[:, 0])


def test_mask_punctuation_false_keeps_punctuation(make_model):
    model = make_model(tiny_config(mask_punctuation=False))
    out, enc = encode_docs(model)
    assert torch.equal(out.context_mask.squeeze(-1), enc["input_ids"] != 0)


def test_keep_dims_false_returns_each_documents_kept_vectors(make_model):
    model = make_model(tiny_config())
    padded, _ = encode_docs(model)
    listed, _ = encode_docs(model, keep_dims=False)
    assert len(listed.late_interaction_output) == len(DOCUMENTS)
    for D, full, mask in zip(
        listed.late_interaction_output, padded.late_interaction_output, padded.context_mask, strict=True
    ):
        assert torch.equal(D, full[mask.squeeze(-1)])


def test_query_image_vectors_follow_text_and_regions_flatten(make_model):
    model = make_model(tiny_config())
    pixels = torch.randn(2, 3, 3, 32, 32)  # three regions of interest per query
    out, _ = encode_queries(model, pixel_values=pixels)
    assert out.late_interaction_output.shape == (2, 32 + 3 * PREFIX, 16)
    for region in range(3):
        single, _ = encode_queries(model, pixel_values=pixels[:, region])
        region_vectors = out.late_interaction_output[:, 32 + region * PREFIX : 32 + (region + 1) * PREFIX]
        assert torch.allclose(region_vectors, single.late_interaction_output[:, 32:], atol=1e-6)
    text_only, _ = encode_queries(model)
    assert torch.allclose(out.late_interaction_output[:, :32], text_only.late_interaction_output, atol=1e-6)
    assert torch.allclose(out.pooler_output, text_only.pooler_output, atol=1e-6)


def test_image_features_equal_the_vision_encoders_cls(make_model):
    model = make_model(tiny_config())
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls_features = model.query_vision_encoder(pixels).last_hidden_state[:, 0]
    from_pixels, _ = encode_queries(model, pixel_values=pixels)
    from_features, _ = encode_queries(model, image_features=cls_features)
    assert torch.allclose(
        from_pixels.late_interaction_output, from_features.late_interaction_output, atol=1e-6
    )


def test_preflmr_query_appends_projection_then_mapping_network_vectors(make_model):
    model = make_model(tiny_preflmr_config())
    out, _ = encode_queries(model, pixel_values=torch.randn(2, 3, 32, 32))
    assert out.late_interaction_output.shape == (2, 32 + PREFIX + PATCHES, 16)


def test_list_valued_concat_flags_zero_parts_per_example(make_model):
    model = make_model(tiny_config())
    pixels = torch.randn(2, 3, 32, 32)
    both, _ = encode_queries(model, pixel_values=pixels)
    mixed, _ = encode_queries(
        model,
        pixel_values=pixels,
        concat_output_from_text_encoder=[True, False],
        concat_output_from_vision_encoder=[False, True],
    )
    Q, full = mixed.late_interaction_output, both.late_interaction_output
    assert torch.allclose(Q[0, :32], full[0, :32], atol=1e-6) and (Q[0, 32:] == 0).all()
    assert (Q[1, :32] == 0).all() and torch.allclose(Q[1, 32:], full[1, 32:], atol=1e-6)


def test_context_images_come_first_with_a_full_mask(make_model):
    model = make_model(tiny_config())
    pixels = torch.randn(len(DOCUMENTS), 3, 32, 32)
    with_image, _ = encode_docs(model, pixel_values=pixels, concat_output_from_vision_encoder=True)
    text_only, _ = encode_docs(model)
    D, mask = with_image.late_interaction_output, with_image.context_mask.squeeze(-1)
    assert D.shape == (len(DOCUMENTS), PREFIX + 40, 16)
    assert mask[:, :PREFIX].all()
    assert torch.equal(mask[:, PREFIX:], text_only.context_mask.squeeze(-1))
    assert torch.allclose(D[:, PREFIX:], text_only.late_interaction_output, atol=1e-6)
    image_only, _ = encode_docs(
        model,
        pixel_values=pixels,
        concat_output_from_vision_encoder=True,
        concat_output_from_text_encoder=False,
    )
    assert torch.allclose(image_only.late_interaction_output, D[:, :PREFIX], atol=1e-6)


def test_separate_encoders_are_independent_modules(make_model):
    model = make_model(
        tiny_config(
            separate_query_and_context_text_encoder=True, separate_query_and_context_vision_encoder=True
        )
    )
    assert model.query_text_encoder is not model.context_text_encoder
    assert model.query_vision_projection is not model.context_vision_projection
    keys = model.state_dict().keys()
    assert any(k.startswith("query_text_encoder.") for k in keys)
    docs_before, _ = encode_docs(model)
    queries_before, _ = encode_queries(model)
    with torch.no_grad():
        model.query_text_encoder_linear.weight.mul_(-1)
    docs_after, _ = encode_docs(model)
    queries_after, _ = encode_queries(model)
    assert torch.equal(docs_before.late_interaction_output, docs_after.late_interaction_output)
    assert torch.allclose(
        queries_after.late_interaction_output, -queries_before.late_interaction_output, atol=1e-6
    )


def test_shared_encoders_are_one_module(make_model):
    model = make_model(tiny_config())
    assert model.query_text_encoder is model.context_text_encoder
    assert model.query_vision_encoder is model.context_vision_encoder
    assert not any(k.startswith("query_") for k in model.state_dict())


def test_attending_to_mask_tokens_changes_their_vectors(make_model):
    import flmr
    from helpers import minilm_folder

    model = make_model(tiny_config())
    plain, _ = encode_queries(model)
    model.query_tokenizer = flmr.FLMRQueryEncoderTokenizer.from_pretrained(
        minilm_folder(), attend_to_mask_tokens=True
    )
    attended, enc = encode_queries(model)
    assert (enc["attention_mask"] == 1).all()
    assert not torch.allclose(plain.late_interaction_output, attended.late_interaction_output, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pixel_values": torch.zeros(3, 3, 32, 32)}, "3 images for 2 texts"),
        ({"image_features": torch.zeros(1, 24)}, "1 images for 2 texts"),
        ({"pixel_values": torch.zeros(2, 32, 32)}, "4-D or 5-D"),
    ],
)
def test_bad_query_images_are_named(make_model, kwargs, message):
    model = make_model(tiny_config())
    with pytest.raises(ValueError, match=message):
        encode_queries(model, **kwargs)


def test_preflmr_rejects_image_features_and_several_regions(make_model):
    model = make_model(tiny_preflmr_config())
    with pytest.raises(ValueError, match="cannot use pre-extracted image_features"):
        encode_queries(model, image_features=torch.zeros(2, 24))
    with pytest.raises(ValueError, match="one image per query, got 3 regions"):
        encode_queries(model, pixel_values=torch.zeros(2, 3, 3, 32, 32))


def test_missing_tokenizer_is_explained():
    import flmr

    model = flmr.FLMRModelForRetrieval(tiny_config()).eval()
    ids = torch.tensor([[101, 1, 2054, 102]])
    with pytest.raises(ValueError, match="has no context_tokenizer"):
        model.doc(ids, torch.ones_like(ids))


def test_document_vision_without_images_is_explained(make_model):
    model = make_model(tiny_config())
    with pytest.raises(ValueError, match="no pixel_values or image_features"):
        encode_docs(model, concat_output_from_vision_encoder=True)


def test_bfloat16_encoding_is_close_to_float32(make_model):
    model = make_model(tiny_config())
    reference, _ = encode_queries(
        model, pixel_values=torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    )
    model = model.to(torch.bfloat16)
    low, _ = encode_queries(
        model, pixel_values=torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    )
    assert low.late_interaction_output.dtype == torch.bfloat16
    assert torch.allclose(low.late_interaction_output.float(), reference.late_interaction_output, atol=0.05)
