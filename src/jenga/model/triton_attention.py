"""The Triton attention path: store the step's K/V, then decode or prefill.

Imported only when triton is installed (model/attention.py's backend
switch calls `triton_paged_attention`).  Everything it reads is a fixed-shape
device tensor of the group metadata (slot pages and offsets, the page
table, query starts, context lengths, positions) plus host ints already in
the metadata, so it never synchronises with the device and a CUDA graph
(model/cuda_graphs.py) can replay it:
- `store_kv` writes each new token's K and V at its slot in place; a row
  whose slot page is negative is padding (a CUDA-graph batch filled up to
  its bucket) and is skipped, as vLLM's slot -1;
- a step whose seqs all have one new token runs the decode kernel
  (triton_decode.py, one program per seq and query head);
- any other step runs the varlen prefill kernel (triton_prefill.py) over
  all its seqs at once, decodes included.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .attn_metadata import GroupAttnMetadata
from .triton_decode import paged_decode
from .triton_prefill import paged_prefill


@triton.jit
def _store_kernel(K, V, KCache, VCache, SlotPages, SlotOffsets,
                  s_kt, s_kh, s_vt, s_vh, s_cp, s_ct, s_ch, s_dp, s_dt, s_dh,
                  HKV: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    t = tl.program_id(0)
    page = tl.load(SlotPages + t).to(tl.int64)
    off = tl.load(SlotOffsets + t).to(tl.int64)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    ok = (h[:, None] < HKV) & (d[None, :] < D) & (tl.zeros((BLOCK_H, BLOCK_D), tl.int32) + page >= 0)
    k = tl.load(K + t * s_kt + h[:, None] * s_kh + d[None, :], mask=ok, other=0.0)
    v = tl.load(V + t * s_vt + h[:, None] * s_vh + d[None, :], mask=ok, other=0.0)
    tl.store(KCache + page * s_cp + off * s_ct + h[:, None] * s_ch + d[None, :],
             k.to(KCache.dtype.element_ty), mask=ok)
    tl.store(VCache + page * s_dp + off * s_dt + h[:, None] * s_dh + d[None, :],
             v.to(VCache.dtype.element_ty), mask=ok)


def store_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_pages: torch.Tensor, slot_offsets: torch.Tensor) -> None:
    """Write k, v [T, Hkv, D] at (slot_pages[t], slot_offsets[t]) of the
    [num_pages, P, Hkv, D] caches; rows with a negative slot page are
    skipped.  Mutates the caches (and so the pool).  Raises ValueError on a
    non-contiguous last dim."""
    T, Hkv, D = k.shape
    if min(k.stride(-1), v.stride(-1), k_cache.stride(-1), v_cache.stride(-1)) != 1:
        raise ValueError("k, v and the caches need a contiguous last dimension")
    if T == 0:
        return
    _store_kernel[(T,)](
        k, v, k_cache, v_cache, slot_pages, slot_offsets,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), k_cache.stride(0), k_cache.stride(1),
        k_cache.stride(2), v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        HKV=Hkv, D=D, BLOCK_H=triton.next_power_of_2(Hkv), BLOCK_D=triton.next_power_of_2(D))


def triton_paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                           v_cache: torch.Tensor, meta: GroupAttnMetadata, *, scale: float, window: int,
                           chunk: int, softcap: float, sinks: torch.Tensor | None) -> torch.Tensor:
    """paged_attention's contract on the Triton path (the caller has checked
    the layer's scope): stores k, v at the metadata's slots, then attends
    q [T, Hq, D] for every seq.  Returns [T, Hq, D] in q's dtype."""
    store_kv(k, v, k_cache, v_cache, meta.slot_pages, meta.slot_offsets)
    qs = meta.query_start
    longest = max((b - a for a, b in zip(qs, qs[1:])), default=0)
    # both kernels compute in q's dtype (decode in fp32), whatever the cache's
    kw = dict(scale=scale, window=window, chunk=chunk, softcap=softcap, sinks=sinks)
    if longest == 1 and len(qs) - 1 == q.shape[0]:
        out = paged_decode(q, k_cache, v_cache, meta.page_table, meta.positions, **kw)
    else:
        out = paged_prefill(q, k_cache, v_cache, meta.page_table, meta.query_start_t, meta.context_lens,
                            longest, **kw)
    return out
