"""The "cpu" attention backend: each gather batch takes the cheapest exact path.

- A fresh batch (every seq starts at position 0: a prompt's first chunk,
  no cached prefix) attends over the step's own new K/V, never touching the
  pool: SDPA with `is_causal=True` (2x faster than an explicit mask) when
  the layer's window and chunk do not cut the chunk and nothing needs
  explicit scores, otherwise `attention.attend` with the scope mask.
- A batch of at most `KERNEL_MAX_QUERIES` queries per seq (decodes,
  speculative verification, short chunks) runs the compiled kernel
  (cpu_kernel.py), which reads each query's keys where they lie in the pool
  and only those, so stale slots need neither zeroing nor copying.
- A longer chunk after a cached prefix is compute-bound (every key meets
  many queries), so one gather of its pages into a contiguous buffer costs
  little beside it: `index_select`, zero only the stale slots, then SDPA.

`cpu_batch` returns False where it does not apply (tensors off the CPU, a
cache dtype other than the compute dtype, the kernel's batch when the
kernel cannot be built or the dtype is not fp32),
which hands the batch to the portable path.  Everything here is checked
against the portable path in tests/model/test_cpu_attention.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import cpu_kernel
from .attention import LayerAttn, attend
from .attn_metadata import AttnBatch, GroupAttnMetadata, scope_mask

# Above this many queries per seq the gather + SDPA path beats the kernel
# (docs/results/cpu-attention.md: on SmolLM2 shapes after 256 cached tokens
# the kernel takes 0.61x the gather's time at 8 queries, 1.16x at 12).
KERNEL_MAX_QUERIES = 10
_NO_SINKS = torch.empty(0)


def _rows_of(x: torch.Tensor, b: AttnBatch) -> torch.Tensor:
    """x[b.rows] as [B, Q, ...]; a slice, not a copy, for one seq."""
    B, Q = b.rows.shape
    if B == 1:
        return x.narrow(0, int(b.rows[0, 0]), Q).unsqueeze(0)
    return x[b.rows]


def _store(out: torch.Tensor, b: AttnBatch, o: torch.Tensor) -> None:
    """Write o [B, Q, Hq, D] into out's rows of the batch."""
    B, Q = b.rows.shape
    if B == 1:
        out.narrow(0, int(b.rows[0, 0]), Q).copy_(o[0])
    else:
        out[b.rows.reshape(-1)] = o.reshape(B * Q, *o.shape[2:]).to(out.dtype)


def fresh_batch(out, q, k, v, b: AttnBatch, layer: LayerAttn) -> None:
    """Seqs starting at position 0: attend over their own new K/V."""
    Q = b.rows.shape[1]
    qb, kb, vb = _rows_of(q, b), _rows_of(k, b), _rows_of(v, b)
    uncut = (not layer.window or layer.window >= Q) and (not layer.chunk or layer.chunk >= Q)
    if uncut and not layer.softcap and layer.sinks is None:
        o = F.scaled_dot_product_attention(qb.transpose(1, 2), kb.transpose(1, 2), vb.transpose(1, 2),
                                           is_causal=True, scale=layer.scale,
                                           enable_gqa=qb.shape[2] != kb.shape[2]).transpose(1, 2)
    else:
        mask = scope_mask(b.q_pos, b.q_pos, layer.window, layer.chunk)
        o = attend(qb, kb, vb, mask, layer.scale, layer.softcap, layer.sinks)
    _store(out, b, o)


def gather_batch(out, q, k_cache, v_cache, b: AttnBatch, meta: GroupAttnMetadata, layer: LayerAttn) -> None:
    """A long chunk after a cached prefix: one index_select of its pages in
    scope, the stale slots (at most the last page and the padding) zeroed."""
    B = b.rows.shape[0]
    _, _, Hkv, D = k_cache.shape
    flat = b.pages.reshape(-1)
    keys = k_cache.index_select(0, flat).view(B, -1, Hkv, D)
    values = v_cache.index_select(0, flat).view(B, -1, Hkv, D)
    stale = ~b.k_valid
    keys[stale] = 0      # a masked NaN would still poison SDPA and p @ V
    values[stale] = 0
    o = attend(_rows_of(q, b), keys, values, layer.mask(b, meta), layer.scale, layer.softcap, layer.sinks)
    _store(out, b, o)


def kernel_batch(out, q, k_cache, v_cache, b: AttnBatch, layer: LayerAttn) -> bool:
    """The compiled kernel over the pages in place; False when it cannot run
    (not built, or not fp32)."""
    if not (q.dtype == out.dtype == k_cache.dtype == v_cache.dtype == torch.float32) or not out.is_contiguous():
        return False
    op = cpu_kernel.load()
    if op is None:
        return False
    sinks = _NO_SINKS if layer.sinks is None else layer.sinks.float().contiguous()
    op(out, q.contiguous(), k_cache, v_cache, b.rows, b.q_pos, b.pages, b.page_start, float(layer.scale),
       int(layer.window), int(layer.chunk), float(layer.softcap), sinks)
    return True


def cpu_batch(out, q, k, v, k_cache, v_cache, b: AttnBatch, meta: GroupAttnMetadata, layer: LayerAttn) -> bool:
    """A batch path for attention.BATCH_PATHS["cpu"]: writes out[b.rows] and
    returns True, or returns False to leave the batch to the portable path."""
    if q.device.type != "cpu" or k_cache.dtype != q.dtype:   # a quantised cache: read back as portable does
        return False
    if b.fresh:
        fresh_batch(out, q, k, v, b, layer)
        return True
    if b.rows.shape[1] > KERNEL_MAX_QUERIES:
        gather_batch(out, q, k_cache, v_cache, b, meta, layer)
        return True
    return kernel_batch(out, q, k_cache, v_cache, b, layer)
