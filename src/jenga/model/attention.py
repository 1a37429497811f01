"""Paged attention over the KV pool: write the step's K/V, then attend.

One contract (`paged_attention`), several backends, chosen per layer call
and tried per gather batch in order until one takes the batch:
- "portable" (CPU and GPU, the reference every other path is checked
  against): index the pages in scope out of the layer's strided cache view,
  zero the stale slots, then PyTorch SDPA with a boolean mask, or explicit
  scores where SDPA cannot express the model (Gemma-2 logit soft-capping,
  gpt-oss attention sinks);
- "cpu" (model/cpu_attention.py): fresh prompt chunks attend over their own
  new K/V with the causal fast path, other batches run the compiled kernel
  that reads the pages in place (or, for long chunks after a cached prefix,
  one gather into a contiguous buffer); the portable path when the kernel
  cannot be built;
- "triton" (CUDA; CPU under TRITON_INTERPRET=1): `triton_attention` stores
  K/V and runs the paged decode or varlen prefill kernel over the whole
  step, which read the pages in place, never gathering them.
"auto" is triton on CUDA when installed, cpu on CPU tensors.  The portable
and cpu backends are chains of per-batch paths in `BATCH_PATHS`: a path
returns False to pass a batch on, so a new kernel for some batches is one
function added to a chain.  Masks: causal over a cached prefix;
sliding window W (a query at p sees p-W+1..p); chunked-local C (p sees
floor(p/C)*C..p).  See docs/model.md.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attn_metadata import AttnBatch, GroupAttnMetadata, scope_mask
from .kv_quant import dequantize, is_quantized, quantize

BACKENDS = ("auto", "portable", "cpu", "triton")


@dataclass(frozen=True)
class LayerAttn:
    """One layer's attention parameters: score scale, its own window /
    chunk (within its group's scope), soft-cap (0: off), sinks [Hq] or None,
    and the scales of an fp8 K/V cache (model/kv_quant.py)."""

    scale: float
    window: int = 0
    chunk: int = 0
    softcap: float = 0.0
    sinks: torch.Tensor | None = None
    k_scale: float = 1.0
    v_scale: float = 1.0

    def mask(self, b: AttnBatch, meta: GroupAttnMetadata) -> torch.Tensor:
        """The batch's [B, Q, K] mask for this layer's scope (the group's own
        mask when the scopes agree)."""
        if (self.window, self.chunk) == (meta.window, meta.chunk):
            return b.mask
        return scope_mask(b.q_pos, b.k_pos, self.window, self.chunk)


def triton_available() -> bool:
    """True when triton is installed (the kernel still needs CUDA tensors,
    or TRITON_INTERPRET=1 for CPU tensors)."""
    return importlib.util.find_spec("triton") is not None


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             meta: GroupAttnMetadata, k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    """Store the step's new keys/values ([T, Hkv, D]) at their slots (scaled
    and saturated for an fp8 cache); mutates the caches (and so the pool)."""
    k_cache[meta.slot_pages, meta.slot_offsets] = quantize(k, k_cache.dtype, k_scale)
    v_cache[meta.slot_pages, meta.slot_offsets] = quantize(v, v_cache.dtype, v_scale)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
           softcap: float = 0.0, sinks: torch.Tensor | None = None) -> torch.Tensor:
    """Masked attention: q [B, Q, Hq, D], k and v [B, K, Hkv, D], mask
    [B, Q, K] (True = attend).  Query head h reads KV head h // (Hq // Hkv).
    softcap > 0 caps scores as cap * tanh(s / cap); sinks [Hq] adds one
    logit per head to the softmax denominator.  Returns [B, Q, Hq, D]."""
    B, Q, Hq, D = q.shape
    Hkv = k.shape[2]
    if Hq % Hkv:
        raise ValueError(f"query heads {Hq} not a multiple of kv heads {Hkv}")
    if not softcap and sinks is None:
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=mask.unsqueeze(1), scale=scale, enable_gqa=Hq != Hkv)
        return out.transpose(1, 2)
    r = Hq // Hkv
    # Scores in fp32: tanh capping and sink logits are sensitive to rounding.
    s = torch.einsum("bqhrd,bkhd->bhrqk", q.reshape(B, Q, Hkv, r, D).float(), k.float()) * scale
    if softcap:
        s = torch.tanh(s / softcap) * softcap
    s = s.masked_fill(~mask[:, None, None], float("-inf"))
    if sinks is not None:
        sink = sinks.float().view(1, Hkv, r, 1, 1).expand(B, Hkv, r, Q, 1)
        s = torch.cat([s, sink], dim=-1)
    p = torch.softmax(s, dim=-1)
    if sinks is not None:
        p = p[..., :-1]
    out = torch.einsum("bhrqk,bkhd->bqhrd", p.to(v.dtype), v)
    return out.reshape(B, Q, Hq, D)


# A batch path: (out, q, k, v, k_cache, v_cache, batch, meta, layer) -> True
# when it wrote out[batch.rows], False to leave the batch to the next path.
BatchPath = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                      AttnBatch, GroupAttnMetadata, LayerAttn], bool]


def portable_batch(out, q, k, v, k_cache, v_cache, b: AttnBatch, meta: GroupAttnMetadata, layer: LayerAttn) -> bool:
    """The reference: gather the pages in scope, zero the stale slots, attend."""
    B, Q = b.rows.shape
    _, P, Hkv, D = k_cache.shape
    # unwritten slots may hold any bytes (a page reused from another group
    # or dtype): zero them, since a masked NaN still poisons SDPA and p @ V
    stale = ~b.k_valid[:, :, None, None]
    # an fp8 cache is read back in the compute dtype (kv_quant.dequantize)
    keys = dequantize(k_cache[b.pages], q.dtype, layer.k_scale).reshape(B, -1, Hkv, D).masked_fill(stale, 0)
    values = dequantize(v_cache[b.pages], q.dtype, layer.v_scale).reshape(B, -1, Hkv, D).masked_fill(stale, 0)
    o = attend(q[b.rows], keys, values, layer.mask(b, meta), layer.scale, layer.softcap, layer.sinks)
    out[b.rows.reshape(-1)] = o.reshape(B * Q, *o.shape[2:]).to(out.dtype)
    return True


def _cpu_batch(*args) -> bool:
    from .cpu_attention import cpu_batch
    return cpu_batch(*args)


BATCH_PATHS: dict[str, tuple[BatchPath, ...]] = {
    "portable": (portable_batch,),
    "cpu": (_cpu_batch, portable_batch),
}


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend `backend` means for tensors on `device`: "auto" is
    triton on CUDA with triton installed, cpu on CPU, else portable.
    Raises ValueError on an unknown name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if device.type == "cuda":
        return "triton" if triton_available() else "portable"
    return "cpu" if device.type == "cpu" else "portable"


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, meta: GroupAttnMetadata, *, scale: float, window: int = 0,
                    chunk: int = 0, softcap: float = 0.0, sinks: torch.Tensor | None = None,
                    backend: str = "auto", k_scale: float = 1.0, v_scale: float = 1.0) -> torch.Tensor:
    """Attention of one layer for one step.

    q [T, Hq, D]; k, v [T, Hkv, D] are the step's new keys/values, written
    into k_cache / v_cache (views from KVPool.kv_view) first.  window/chunk
    are the layer's own scope, which must lie within the group's (the pages
    the plan keeps).  backend: one of BACKENDS (see resolve_backend); triton
    takes the whole call, otherwise each batch goes to the first path of the
    backend's chain that takes it.
    An fp8 cache (`--kv-cache-dtype`) stores K / k_scale and V / v_scale and
    is attended in q's dtype through the portable path (the compiled
    kernels read the compute dtype only).
    Returns [T, Hq, D] in q's dtype.  Raises ValueError on a scope the
    group's pages do not cover or an unknown backend.
    """
    kind = resolve_backend(backend, q.device)
    if is_quantized(k_cache) and kind == "triton":
        kind = "portable"
    if not meta.covers(window, chunk):
        raise ValueError(f"layer scope window={window} chunk={chunk} exceeds group {meta.gid}'s pages "
                         f"(window={meta.window}, chunk={meta.chunk})")
    if kind == "triton":
        from .triton_attention import triton_paged_attention
        return triton_paged_attention(q, k, v, k_cache, v_cache, meta, scale=scale, window=window,
                                      chunk=chunk, softcap=softcap, sinks=sinks)
    paths = BATCH_PATHS[kind]
    write_kv(k_cache, v_cache, k, v, meta, k_scale, v_scale)
    layer = LayerAttn(scale, window, chunk, softcap, sinks, k_scale, v_scale)
    out = torch.empty_like(q)
    for b in meta.batches:
        for path in paths:   # the chain ends in portable_batch, which takes every batch
            if path(out, q, k, v, k_cache, v_cache, b, meta, layer):
                break
    return out
