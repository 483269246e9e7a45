"""Inference precision of an FLMR model: float32, bfloat16, or int8 (dynamically quantised linear layers).

bfloat16 runs fast only on CPUs with native bfloat16 arithmetic (AMX or AVX-512 BF16); elsewhere torch
emulates it and it is slower than float32. int8 replaces the linear layers of the text and vision
encoders by ``torch.ao.quantization.quantize_dynamic`` ones (weights int8, activations quantised per
call); the small output projections and the mapping network stay in float32.

``"auto"`` picks bfloat16 on a CPU that has native bfloat16 arithmetic (where it ran 3-5x faster than
float32 with PreFLMR) and float32 everywhere else, including accelerators (load a CUDA model in the
dtype you want). float32 stays the default: neither variant keeps the top-10 of MiniLM-FLMR's Debian
benchmark at >= 0.99 (bfloat16 0.978, int8 0.55; ``benchmarks/encode.py --precision-agreement``).

Example:
    >>> from flmr import FLMRModelForRetrieval
    >>> model = apply_precision(FLMRModelForRetrieval.from_pretrained("my_checkpoint"), "int8")
    >>> model.context_text_encoder.text_model.encoder.layer[0].attention.self.query
    DynamicQuantizedLinear(in_features=24, out_features=24, dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    >>> resolve_precision("auto", "cpu", flags=frozenset({"avx2"}))  # a CPU without AMX / AVX-512 BF16
    'float32'
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from flmr.model.errors import ModelInputError

Precision = Literal["float32", "bfloat16", "int8"]
PRECISIONS: tuple[str, ...] = (*get_args(Precision), "auto")
CPUINFO = Path("/proc/cpuinfo")
BFLOAT16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# The encoders' transformer layers are quantised; these stay float32 (small, and they set the vectors).
FLOAT_MODULE_PREFIXES = (
    "context_text_encoder_linear",
    "query_text_encoder_linear",
    "context_vision_projection",
    "query_vision_projection",
    "transformer_mapping",
)


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def _this_cpu_flags() -> frozenset[str]:
    return cpu_flags()


def cpu_has_fast_bfloat16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively (AMX or AVX-512 BF16), as detected in ``flags``.

    torch's ``torch.backends.cpu.get_cpu_capability()`` names the widest vector unit ("AVX512" may lack
    BF16), so the flags decide.
    """
    return bool(BFLOAT16_CPU_FLAGS & (_this_cpu_flags() if flags is None else flags))


def resolve_precision(
    precision: str, device: str | torch.device = "cpu", flags: frozenset[str] | None = None
) -> Precision:
    """The concrete precision ``precision`` means on ``device`` (``"auto"`` is resolved as the module says).

    Raises:
        ModelInputError: an unknown precision, or int8 on an accelerator (dynamic quantisation is CPU-only).
    """
    if precision not in PRECISIONS:
        raise ModelInputError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    on_cpu = torch.device(device).type == "cpu"
    if precision == "auto":
        return "bfloat16" if on_cpu and cpu_has_fast_bfloat16(flags) else "float32"
    if precision == "int8" and not on_cpu:
        raise ModelInputError(f"precision 'int8' (dynamic quantisation) runs on CPU only, not on {device}")
    return precision  # type: ignore[return-value]


def apply_precision(model: nn.Module, precision: str, device: str | torch.device = "cpu") -> nn.Module:
    """Convert ``model`` (in place where possible) to ``precision`` for inference; returns the model.

    float32 and bfloat16 cast every weight; int8 quantises the encoders' linear layers in place (no copy
    of the model, so memory does not double) after casting to float32. The model is put in eval mode.

    Raises:
        ModelInputError: as [`resolve_precision`].
    """
    concrete = resolve_precision(precision, device)
    model = model.eval()
    if concrete == "bfloat16":
        return model.to(torch.bfloat16)
    model = model.to(torch.float32)
    if concrete == "int8":
        _quantize_encoder_linears(model)
    return model


def _quantize_encoder_linears(model: nn.Module) -> None:
    from torch.ao.quantization import quantize_dynamic

    names = {
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.startswith(FLOAT_MODULE_PREFIXES)
    }
    with warnings.catch_warnings():  # torch marks its eager quantisation deprecated (in favour of torchao)
        warnings.simplefilter("ignore")
        quantize_dynamic(model, qconfig_spec=names, dtype=torch.qint8, inplace=True)


def model_precision(model: nn.Module) -> Precision:
    """The precision ``model`` runs in: int8 when it holds dynamically quantised layers, else its dtype."""
    if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()):
        return "int8"
    dtype = next(model.parameters()).dtype
    return "bfloat16" if dtype == torch.bfloat16 else "float32"
