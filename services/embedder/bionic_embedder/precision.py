"""Inference precision: what the CPU supports natively, and the model cast to it.

* ``fp32`` — the model as trained.
* ``bf16`` — weights and activations in bfloat16; fast where the CPU multiplies bf16
  natively (AVX512-BF16, AMX), slow emulation elsewhere.
* ``int8`` — torch dynamic quantisation of every Linear layer (per-channel weights,
  activations quantised on the fly); the rest stays fp32.
* ``auto`` — bf16 on a CPU with native bf16, fp32 elsewhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "int8"]
Requested = Literal["auto", "fp32", "bf16", "int8"]

# Feature name -> torch's probe (cpuinfo based, so it also works outside Linux).
_PROBES: dict[str, Callable[[], bool]] = {
    "avx2": torch.cpu._is_avx2_supported,
    "avx512": torch.cpu._is_avx512_supported,
    "avx512_vnni": torch.cpu._is_vnni_supported,
    "avx512_bf16": torch.cpu._is_avx512_bf16_supported,
    "amx_tile": torch.cpu._is_amx_tile_supported,
}
NATIVE_BF16 = ("avx512_bf16", "amx_tile")


def cpu_features(hidden: Iterable[str] = ()) -> list[str]:
    """The CPU's features that matter for inference, minus those configured as hidden."""
    hide = set(hidden)
    return [name for name, probe in _PROBES.items() if name not in hide and probe()]


def choose(requested: Requested, features: list[str]) -> Precision:
    if requested != "auto":
        return requested
    return "bf16" if any(f in features for f in NATIVE_BF16) else "fp32"


def cast(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """`model` (fp32) in `precision`; bf16 converts in place, int8 returns a new module."""
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        with warnings.catch_warnings():  # torch marks eager quantisation as moving to torchao
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=UserWarning)
            quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                model,
                {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                dtype=torch.qint8,
            )
        return quantized
    return model
