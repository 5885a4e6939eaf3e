"""Compute precision of the frozen LLM: what runs in bf16, and when that is the default.

Why autocast rather than casting the weights: under ``torch.autocast`` the matmuls run in bf16 (the
CPU's AVX-512 BF16 / a GPU's tensor cores) while weights, softmax and norms keep fp32, so the risks move
far less than with bf16 weights for about the same speed; trainable weights stay fp32 for the optimizer.
int8 dynamic quantisation of the linear layers was measured too (:func:`quantized_copy`): faster still, but
it scrambles the risks of a trained HeLM (``benchmarks/results/cpu_speed.md``), so it is not a precision a
model can be run in.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from signals.errors import SpirolmInputError

PRECISIONS = ("fp32", "bf16")
"""``fp32``; ``bf16`` (bf16 autocast over fp32 weights)."""
AUTO = "auto"


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 matmuls are native here (AVX-512 BF16 / AMX on CPU, bf16 support on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve(precision: str, device: torch.device | str = "cpu") -> str:
    """``auto`` → ``bf16`` where bf16 is native (the measured default), else ``fp32``; others as given.

    Raises:
        SpirolmInputError: an unknown precision name.
    """
    if precision == AUTO:
        return "bf16" if bf16_supported(device) else "fp32"
    if precision not in PRECISIONS:
        raise SpirolmInputError(f"unknown precision {precision!r}; choose auto or one of {', '.join(PRECISIONS)}",
                                field="precision")
    return precision


@contextlib.contextmanager
def compute(precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """The autocast region a forward (and its backward) runs in for ``precision``."""
    device = torch.device(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def kv_dtype(precision: str) -> torch.dtype | None:
    """Storage dtype of cached prefix keys/values: the compute precision (None keeps the model's)."""
    return torch.bfloat16 if precision == "bf16" else None


def quantized_copy(model: nn.Module) -> nn.Module:
    """An int8 dynamic-quantised copy of ``model``'s linear layers (measurement only; the original is kept)."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
