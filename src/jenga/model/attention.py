"""Paged attention over the KV pool: write the step's K/V, then attend.

Two paths share one contract (`paged_attention`):
- portable (CPU and GPU): for each gather batch of the group metadata, index
  the pages in scope out of the layer's strided cache view, then run PyTorch
  SDPA with a boolean mask, or explicit scores where SDPA cannot express the
  model (Gemma-2 logit soft-capping, gpt-oss attention sinks);
- triton (CUDA; CPU under TRITON_INTERPRET=1): `triton_attention` stores
  K/V and runs the paged decode or varlen prefill kernel, which read the
  pages in place, never gathering them.
Masks: causal over a cached prefix; sliding window W (a query at p sees
p-W+1..p); chunked-local C (p sees floor(p/C)*C..p).  See docs/model.md.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from .attn_metadata import AttnBatch, GroupAttnMetadata, scope_mask

BACKENDS = ("auto", "portable", "triton")


def triton_available() -> bool:
    """True when triton is installed (the kernel still needs CUDA tensors,
    or TRITON_INTERPRET=1 for CPU tensors)."""
    return importlib.util.find_spec("triton") is not None


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             meta: GroupAttnMetadata) -> None:
    """Store the step's new keys/values ([T, Hkv, D]) at their slots; mutates
    the caches (and so the pool)."""
    k_cache[meta.slot_pages, meta.slot_offsets] = k.to(k_cache.dtype)
    v_cache[meta.slot_pages, meta.slot_offsets] = v.to(v_cache.dtype)


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


def _portable(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, b: AttnBatch,
              mask: torch.Tensor, scale: float, softcap: float, sinks: torch.Tensor | None) -> torch.Tensor:
    B, Q = b.rows.shape
    _, P, Hkv, D = k_cache.shape
    # unwritten slots may hold any bytes (a page reused from another group
    # or dtype): zero them, since a masked NaN still poisons SDPA and p @ V
    stale = ~b.k_valid[:, :, None, None]
    keys = k_cache[b.pages].reshape(B, -1, Hkv, D).masked_fill(stale, 0)
    values = v_cache[b.pages].reshape(B, -1, Hkv, D).masked_fill(stale, 0)
    out = attend(q[b.rows].to(keys.dtype), keys, values, mask, scale, softcap, sinks)
    return out.reshape(B * Q, *out.shape[2:])


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, meta: GroupAttnMetadata, *, scale: float, window: int = 0,
                    chunk: int = 0, softcap: float = 0.0, sinks: torch.Tensor | None = None,
                    backend: str = "auto") -> torch.Tensor:
    """Attention of one layer for one step.

    q [T, Hq, D]; k, v [T, Hkv, D] are the step's new keys/values, written
    into k_cache / v_cache (views from KVPool.kv_view) first.  window/chunk
    are the layer's own scope, which must lie within the group's (the pages
    the plan keeps).  backend: "auto" uses triton on CUDA when installed,
    "portable" never, "triton" always.
    Returns [T, Hq, D] in q's dtype.  Raises ValueError on a scope the
    group's pages do not cover or an unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not meta.covers(window, chunk):
        raise ValueError(f"layer scope window={window} chunk={chunk} exceeds group {meta.gid}'s pages "
                         f"(window={meta.window}, chunk={meta.chunk})")
    if backend == "triton" or (backend == "auto" and q.is_cuda and triton_available()):
        from .triton_attention import triton_paged_attention
        return triton_paged_attention(q, k, v, k_cache, v_cache, meta, scale=scale, window=window,
                                      chunk=chunk, softcap=softcap, sinks=sinks)
    write_kv(k_cache, v_cache, k, v, meta)
    out = torch.empty_like(q)
    for b in meta.batches:
        same = (window, chunk) == (meta.window, meta.chunk)
        mask = b.mask if same else scope_mask(b.q_pos, b.k_pos, window, chunk)
        out[b.rows.reshape(-1)] = _portable(q, k_cache, v_cache, b, mask, scale, softcap, sinks).to(q.dtype)
    return out
