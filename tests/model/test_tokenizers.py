"""Tokenizer rules of the spec, on the real bert-base-uncased vocabulary."""

import pytest
import torch
from transformers import AutoTokenizer

import flmr
from helpers import ORIGINAL_FLMR_TINY, minilm_folder, needs_shared


def test_query_marker_mask_padding_and_length(query_tokenizer):
    enc = query_tokenizer(["What is the capital of France?", "tower"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == (2, 32) and mask.shape == (2, 32)
    assert ids[:, 0].tolist() == [101, 101]
    assert ids[:, 1].tolist() == [query_tokenizer.convert_tokens_to_ids("[unused0]")] * 2
    # ". tower" -> [CLS] [Q] tower [SEP] then [MASK] padding that is not attended
    assert ids[1, 2].item() == query_tokenizer.convert_tokens_to_ids("tower")
    assert ids[1, 3].item() == 102
    assert (ids[1, 4:] == 103).all() and (mask[1, 4:] == 0).all() and (mask[1, :4] == 1).all()
    assert (ids != 0).all()


def test_query_max_length_override_truncates(query_tokenizer):
    enc = query_tokenizer("a very long question " * 20, max_length=12)
    assert enc["input_ids"].shape == (1, 12)
    assert enc["input_ids"][0, -1].item() == 102


def test_query_attend_to_mask_tokens_gives_full_mask():
    tok = flmr.FLMRQueryEncoderTokenizer.from_pretrained(minilm_folder(), attend_to_mask_tokens=True)
    enc = tok(["tower"])
    assert (enc["attention_mask"] == 1).all()
    assert (enc["input_ids"][0, 4:] == 103).all()


def test_query_maxlen_from_text_config():
    tok = flmr.FLMRQueryEncoderTokenizer.from_pretrained(
        minilm_folder(), text_config=flmr.FLMRTextConfig(query_maxlen=20)
    )
    assert tok(["tower"])["input_ids"].shape == (1, 20)


def test_context_marker_padding_and_doc_maxlen_cap(context_tokenizer):
    tok = flmr.FLMRContextEncoderTokenizer.from_pretrained(minilm_folder(), doc_maxlen=24)
    enc = tok(["Paris is the capital of France.", "word " * 100], max_length=512)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == (2, 24)
    assert (ids[:, 1] == tok.convert_tokens_to_ids("[unused1]")).all()
    assert ids[1, -1].item() == 102 and mask[1].sum() == 24
    n_real = int(mask[0].sum())
    assert (ids[0, n_real:] == 0).all()
    assert context_tokenizer(["x"])["input_ids"].shape == (1, 512)


@needs_shared  # the original's saved tokenizer configs
def test_fixture_tokenizers_load_with_and_without_text_config():
    config = flmr.FLMRConfig.from_pretrained(ORIGINAL_FLMR_TINY)
    plain = flmr.FLMRQueryEncoderTokenizer.from_pretrained(ORIGINAL_FLMR_TINY, subfolder="query_tokenizer")
    with_config = flmr.FLMRQueryEncoderTokenizer.from_pretrained(
        ORIGINAL_FLMR_TINY, subfolder="query_tokenizer", text_config=config.text_config
    )
    assert torch.equal(plain(["tower"])["input_ids"], with_config(["tower"])["input_ids"])


@pytest.mark.parametrize(
    ("subfolder", "cls"),
    [
        ("query_tokenizer", flmr.FLMRQueryEncoderTokenizer),
        ("context_tokenizer", flmr.FLMRContextEncoderTokenizer),
    ],
)
@needs_shared  # the class names the original stored
def test_auto_tokenizer_resolves_the_stored_class_names(subfolder, cls):
    tok = AutoTokenizer.from_pretrained(ORIGINAL_FLMR_TINY, subfolder=subfolder)
    assert isinstance(tok, cls)


def test_fast_names_are_the_same_tokenizers():
    assert flmr.FLMRQueryEncoderTokenizerFast is flmr.FLMRQueryEncoderTokenizer
    assert flmr.FLMRContextEncoderTokenizerFast is flmr.FLMRContextEncoderTokenizer


def test_non_string_input_is_rejected(query_tokenizer):
    with pytest.raises(TypeError, match="list of strings"):
        query_tokenizer([1, 2])


def test_saved_tokenizer_writes_vocab_txt_and_reloads(tmp_path, query_tokenizer):
    query_tokenizer.save_pretrained(tmp_path)
    vocab = (tmp_path / "vocab.txt").read_text().splitlines()
    assert len(vocab) == 30522 and vocab[103] == "[MASK]" and vocab[1] == "[unused0]"
    reloaded = flmr.FLMRQueryEncoderTokenizer.from_pretrained(tmp_path)
    text = ["Café Zürich: what is 東京?"]
    assert torch.equal(reloaded(text)["input_ids"], query_tokenizer(text)["input_ids"])
