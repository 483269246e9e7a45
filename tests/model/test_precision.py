"""Precision variants for CPU inference: detection of native bfloat16, closeness to float32, the options."""

from pathlib import Path

import pytest
import torch

import flmr
from flmr.cli.main import PRECISION_CHOICES, build_parser
from flmr.encoding import model_fingerprint, same_encoder
from flmr.model.precision import (
    PRECISIONS,
    apply_precision,
    cpu_flags,
    cpu_has_fast_bfloat16,
    model_precision,
    resolve_precision,
)
from helpers import PREFLMR_TINY

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
flags\t\t: fpu sse2 avx avx2 {extra}
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu sse2
"""


def _cpuinfo(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(vendor="GenuineIntel", extra=extra))
    return path


@pytest.mark.parametrize(
    ("extra", "fast"),
    [("", False), ("avx512f avx512_vnni", False), ("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True)],
)
def test_native_bfloat16_is_detected_from_cpuinfo(tmp_path, extra, fast):
    flags = cpu_flags(_cpuinfo(tmp_path, extra))
    assert "avx2" in flags and "fpu" in flags
    assert cpu_has_fast_bfloat16(flags) is fast
    assert resolve_precision("auto", "cpu", flags) == ("bfloat16" if fast else "float32")


def test_missing_cpuinfo_means_no_flags(tmp_path):
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_resolve_precision_rejects_what_cannot_run():
    assert resolve_precision("auto", "cuda", frozenset({"amx_bf16"})) == "float32"
    assert resolve_precision("int8", "cpu") == "int8"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8")


@pytest.fixture(scope="module")
def preflmr_inputs():
    model = flmr.FLMRModelForRetrieval.from_pretrained(PREFLMR_TINY)
    side = model.config.vision_config.image_size
    queries = model.query_tokenizer(
        ["Question: which editor runs in a terminal?", "Question: a music player"]
    )
    docs = model.context_tokenizer(["Vim is a text editor for the terminal.", "Rhythmbox plays music files."])
    pixels = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    return queries, docs, pixels


def _embeddings(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    queries, docs, pixels = inputs
    with torch.inference_mode():
        Q = model.query(**queries, pixel_values=pixels).late_interaction_output.float()
        D = model.doc(**docs).late_interaction_output.float()
    return Q, D


@pytest.mark.parametrize(("precision", "tolerance"), [("bfloat16", 0.03), ("int8", 0.08)])
def test_variants_stay_close_to_float32(preflmr_inputs, precision, tolerance):
    reference = _embeddings(flmr.FLMRModelForRetrieval.from_pretrained(PREFLMR_TINY), preflmr_inputs)
    model = apply_precision(flmr.FLMRModelForRetrieval.from_pretrained(PREFLMR_TINY), precision)
    assert model_precision(model) == precision
    for variant, expected in zip(_embeddings(model, preflmr_inputs), reference, strict=True):
        assert variant.shape == expected.shape
        nonzero = expected.abs().sum(-1) > 0
        assert (variant - expected).abs().max() < tolerance
        cosine = torch.nn.functional.cosine_similarity(variant[nonzero], expected[nonzero], dim=-1)
        assert cosine.min() > 0.99


def test_int8_quantises_the_encoders_only_and_keeps_the_fingerprint_usable():
    base = flmr.FLMRModelForRetrieval.from_pretrained(PREFLMR_TINY)
    before = model_fingerprint(base)
    model = apply_precision(base, "int8")
    quantised = {name for name, m in model.named_modules() if type(m).__module__.startswith("torch.ao.nn")}
    assert any(name.startswith("context_text_encoder.") for name in quantised)
    assert any(name.startswith("context_vision_encoder.") for name in quantised)
    assert not any(
        name.startswith(("context_text_encoder_linear", "transformer_mapping")) for name in quantised
    )
    assert model_fingerprint(model)["digest"] == before["digest"]  # computable, same architecture


def test_retriever_in_another_precision_searches_a_float32_index(tmp_path):
    index = flmr.Retriever.from_pretrained(PREFLMR_TINY).index(
        ["Vim is a text editor.", "Rhythmbox plays music.", "GCC compiles C."],
        tmp_path / "idx",
        show_progress=False,
    )
    for precision in ("int8", "bfloat16"):
        retriever = flmr.Retriever.from_pretrained(PREFLMR_TINY, precision=precision)
        assert model_precision(retriever.model) == precision
        assert same_encoder(index.encoder, retriever.fingerprint)
        hits = retriever.search("text editor", index, k=3, exact=True)[0]
        assert sorted(h.pid for h in hits) == [0, 1, 2]


@pytest.mark.parametrize(
    "command",
    [
        ["index", "--checkpoint", "c", "--output", "o", "--collection", "sample"],
        ["search", "idx", "question"],
        ["serve", "idx"],
    ],
)
def test_cli_commands_take_a_precision(command):
    parser = build_parser()
    assert parser.parse_args(command).precision == "float32"
    assert parser.parse_args([*command, "--precision", "int8"]).precision == "int8"
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--precision", "fp8"])


def test_cli_precision_choices_are_the_models():
    assert PRECISION_CHOICES == PRECISIONS
