"""Loading every alias layout, saving safetensors in the published layout, Auto classes, errors."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

import flmr
from flmr.model.checkpoint_layout import key_aliases
from helpers import ORIGINAL_FLMR_TINY as FLMR_TINY
from helpers import ORIGINAL_PREFLMR_TINY as PREFLMR_TINY
from helpers import minilm_folder, needs_shared, tiny_config

# loads the original implementation's saved checkpoints (every key alias, its configs)
pytestmark = needs_shared


@pytest.fixture(scope="module")
def reference():
    model = flmr.FLMRModelForRetrieval.from_pretrained(FLMR_TINY)
    return model, outputs_of(model)


def outputs_of(model):
    q = model.query_tokenizer(["Question: what is the capital of France?", "tower"])
    d = model.context_tokenizer(["Paris is the capital of France.", "A tower, in Paris!"], max_length=24)
    pixels = torch.linspace(-1, 1, 2 * 3 * 32 * 32).view(2, 3, 32, 32)
    with torch.no_grad():
        Q = model.query(**q, pixel_values=pixels).late_interaction_output
        D = model.doc(**d).late_interaction_output
    return Q, D


def checkpoint_folder(tmp_path, tensors, weights_file="model.safetensors", source=FLMR_TINY):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(source / "config.json", folder / "config.json")
    for sub in ("query_tokenizer", "context_tokenizer"):
        shutil.copytree(source / sub, folder / sub)
    if weights_file.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / weights_file)
    else:
        torch.save(tensors, folder / weights_file)
    return folder


def every_alias_checkpoint():
    return torch.load(FLMR_TINY / "pytorch_model.bin", weights_only=True)


def keep_only(tensors, predicate):
    return {k: v for k, v in tensors.items() if predicate(k)}


LAYOUTS = {
    "context_bert_model": lambda k: k.startswith("context_") and ".text_model." not in k,
    "query_text_model": lambda k: k.startswith("query_") and ".bert_model." not in k,
    "mixed": lambda k: (
        (k.startswith("query_text_encoder.bert_model"))
        or k.startswith(("query_text_encoder_linear", "context_vision"))
    ),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_every_alias_layout_loads_every_weight(tmp_path, reference, layout, weights_file):
    tensors = keep_only(every_alias_checkpoint(), LAYOUTS[layout])
    folder = checkpoint_folder(tmp_path, tensors, weights_file)
    model, info = flmr.FLMRModelForRetrieval.from_pretrained(folder, output_loading_info=True)
    assert info["unexpected_keys"] == [] and info["missing_keys"] == []
    for got, want in zip(outputs_of(model), reference[1], strict=True):
        assert torch.equal(got, want)


def test_missing_and_unknown_tensors_are_reported(tmp_path):
    tensors = keep_only(every_alias_checkpoint(), LAYOUTS["context_bert_model"])
    tensors.pop("context_text_encoder_linear.weight")
    tensors["some_head.weight"] = torch.zeros(2)
    tensors["context_text_encoder.bert_model.embeddings.position_ids"] = torch.arange(512)
    folder = checkpoint_folder(tmp_path, tensors)
    _, info = flmr.FLMRModelForRetrieval.from_pretrained(folder, output_loading_info=True)
    assert info["unexpected_keys"] == ["some_head.weight"]
    assert info["missing_keys"] == ["context_text_encoder_linear.weight"]


def test_save_pretrained_writes_published_safetensors_and_reloads_identically(tmp_path, reference):
    model, expected = reference
    model.save_pretrained(tmp_path / "saved")
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    published = set(load_file(PREFLMR_TINY / "model.safetensors"))
    flmr_published = {k for k in published if not k.startswith("transformer_mapping")}
    assert set(saved) == flmr_published  # same layout as the hub checkpoints
    assert (tmp_path / "saved" / "query_tokenizer" / "vocab.txt").exists()
    reloaded = flmr.FLMRModelForRetrieval.from_pretrained(tmp_path / "saved")
    for got, want in zip(outputs_of(reloaded), expected, strict=True):
        assert torch.equal(got, want)


def test_preflmr_and_separate_encoders_round_trip(tmp_path, make_model):
    config = tiny_config(
        separate_query_and_context_text_encoder=True,
        use_transformer_mapping_network=True,
        transformer_mapping_config_base="bert-base-uncased",
        transformer_mapping_num_hidden_layers=1,
    )
    model = make_model(config, seed=5)
    model.save_pretrained(tmp_path / "saved")
    keys = set(load_file(tmp_path / "saved" / "model.safetensors"))
    assert any(k.startswith("context_text_encoder.bert_model.") for k in keys)
    assert any(k.startswith("query_text_encoder.bert_model.") for k in keys)
    assert any(k.startswith("transformer_mapping_network.layer.0.crossattention.") for k in keys)
    reloaded = flmr.FLMRModelForRetrieval.from_pretrained(tmp_path / "saved")
    for got, want in zip(outputs_of(reloaded), outputs_of(model), strict=True):
        assert torch.equal(got, want)


def test_auto_classes_load_a_checkpoint_folder(reference):
    config = AutoConfig.from_pretrained(FLMR_TINY)
    assert isinstance(config, flmr.FLMRConfig)
    model = AutoModel.from_pretrained(FLMR_TINY)
    assert isinstance(model, flmr.FLMRModelForRetrieval)
    for got, want in zip(outputs_of(model.eval()), reference[1], strict=True):
        assert torch.equal(got, want)


def test_config_fields_passed_to_from_pretrained_override_the_config():
    model = flmr.FLMRModelForRetrieval.from_pretrained(FLMR_TINY, mask_punctuation=False)
    assert model.config.mask_punctuation is False


def test_a_checkpoint_without_tokenizers_says_what_to_pass(tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copy(FLMR_TINY / "config.json", folder)
    shutil.copy(FLMR_TINY / "pytorch_model.bin", folder)
    with pytest.raises(OSError, match=r"no query_tokenizer/ folder.*Pass query_tokenizer="):
        flmr.FLMRModelForRetrieval.from_pretrained(folder)
    tokenizers = {
        "query_tokenizer": flmr.FLMRQueryEncoderTokenizer.from_pretrained(minilm_folder()),
        "context_tokenizer": flmr.FLMRContextEncoderTokenizer.from_pretrained(minilm_folder()),
    }
    assert (
        flmr.FLMRModelForRetrieval.from_pretrained(folder, **tokenizers).query_tokenizer
        is tokenizers["query_tokenizer"]
    )


def test_a_folder_without_weights_is_explained(tmp_path):
    folder = checkpoint_folder(tmp_path, {"x": torch.zeros(1)})
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="holds no model weights"):
        flmr.FLMRModelForRetrieval.from_pretrained(folder)


def test_unknown_config_keys_are_kept(tmp_path):
    config = json.loads((FLMR_TINY / "config.json").read_text())
    config["my_extra_field"] = {"a": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = flmr.FLMRConfig.from_pretrained(tmp_path)
    assert loaded.my_extra_field == {"a": 1}
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["my_extra_field"] == {"a": 1}


def test_aliases_cover_query_context_and_backbone_names():
    config = flmr.FLMRConfig()
    aliases = key_aliases("context_text_encoder.text_model.embeddings.word_embeddings.weight", config)
    assert set(aliases) == {
        "context_text_encoder.text_model.embeddings.word_embeddings.weight",
        "context_text_encoder.bert_model.embeddings.word_embeddings.weight",
        "query_text_encoder.text_model.embeddings.word_embeddings.weight",
        "query_text_encoder.bert_model.embeddings.word_embeddings.weight",
    }
    separate = flmr.FLMRConfig(separate_query_and_context_vision_encoder=True)
    assert key_aliases("context_vision_encoder.vision_model.pre_layrnorm.weight", separate) == [
        "context_vision_encoder.vision_model.pre_layrnorm.weight",
        "context_vision_encoder.vision_model.vision_model.pre_layrnorm.weight",
    ]


def test_non_bert_text_encoder_builds_through_automodel_and_round_trips(tmp_path, make_model):
    distilbert = {"model_type": "distilbert", "dim": 24, "hidden_dim": 48, "n_layers": 2, "n_heads": 4}
    config = tiny_config(
        text_config={"text_encoder_base_model": "distilbert-base-uncased", "text_encoder_config": distilbert}
    )
    model = make_model(config)
    assert type(model.context_text_encoder.text_model).__name__ == "DistilBertModel"
    model.save_pretrained(tmp_path / "saved")
    reloaded = flmr.FLMRModelForRetrieval.from_pretrained(tmp_path / "saved")
    for got, want in zip(outputs_of(reloaded), outputs_of(model), strict=True):
        assert torch.equal(got, want)


def test_text_encoder_base_model_may_name_a_local_folder(make_model):
    config = tiny_config(text_config={"text_encoder_base_model": str(minilm_folder())})
    model = make_model(config)
    assert model.context_text_encoder.hidden_size == 384
    assert model.config.text_config.text_encoder_config["model_type"] == "bert"
