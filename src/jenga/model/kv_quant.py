"""8-bit K/V storage: what writing to and reading from an fp8 cache means.

A group whose spec dtype is fp8 (`--kv-cache-dtype`, memory/kv_dtype.py)
has K/V views in torch's float8 types (KVPool.kv_view).  Values are stored
as x / scale, saturated to the format's finite range (an fp8 cast of an
out-of-range value would be NaN or inf), and read back as stored * scale
in the compute dtype, so attention always computes in the model's dtype.
`scale` is the layer's k_scale / v_scale from the checkpoint, 1.0 when it
has none (as in vLLM).  For caches in the compute dtype both functions are
plain casts.
"""

from __future__ import annotations

import torch

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def is_quantized(cache: torch.Tensor) -> bool:
    return cache.dtype in FP8_DTYPES


def quantize(x: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """x as stored in a cache of `dtype` (scaled and saturated for fp8)."""
    if dtype not in FP8_DTYPES:
        return x.to(dtype)
    limit = torch.finfo(dtype).max
    y = x.float() if scale == 1.0 else x.float() / scale
    return y.clamp(-limit, limit).to(dtype)


def dequantize(stored: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """Cache contents in the compute `dtype` (times `scale` for fp8)."""
    if stored.dtype not in FP8_DTYPES:
        return stored.to(dtype)
    y = stored.to(dtype)
    return y if scale == 1.0 else y * scale
