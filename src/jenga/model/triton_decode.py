"""Triton paged-decode kernel: one new token per seq, pages read in place.

Imported only when triton is installed (triton_attention.py dispatches to
it).  One program per (seq, query head) walks the seq's pages in scope
straight out of the layer's strided pool view (page stride = the group's
small page, exactly the page-first layout's promise: no kernel change per
group), with an online softmax in fp32.  It reads the group's page table
and the query positions, both fixed-shape device tensors, and derives the
pages to visit on the device (from the first page the window or chunk
needs to the query's own), so a CUDA graph can replay it for any context
lengths.  GQA, sliding window, chunked-local scope, logit soft-capping and
attention sinks, like the portable path it is checked against
(tests/model/test_triton_decode.py under TRITON_INTERPRET=1,
scripts/gpu_check_attention.py on a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _decode_kernel(Q, K, V, Out, Table, QPos, Sinks,
                   s_qb, s_qh, s_kp, s_kt, s_kh, s_vp, s_vt, s_vh, s_ob, s_oh, s_tb,
                   scale, softcap, window, chunk,
                   GROUP: tl.constexpr, P: tl.constexpr, BLOCK_P: tl.constexpr, D: tl.constexpr,
                   BLOCK_D: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_CHUNK: tl.constexpr,
                   HAS_SOFTCAP: tl.constexpr, HAS_SINKS: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    kvh = h // GROUP
    d = tl.arange(0, BLOCK_D)
    t = tl.arange(0, BLOCK_P)
    d_ok = d < D
    q = tl.load(Q + b * s_qb + h * s_qh + d, mask=d_ok, other=0.0).to(tl.float32)
    q_pos = tl.load(QPos + b)
    lo = q_pos * 0                     # first key position the query sees
    if HAS_WINDOW:
        lo = tl.maximum(q_pos - window + 1, 0)
    if HAS_CHUNK:
        lo = q_pos // chunk * chunk
    # Finite start: a fully masked first page must not produce exp(-inf + inf).
    m = tl.full((), -1.0e30, tl.float32)
    denom = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    # pages before lo // P may be released (NO_PAGE, stored as 0): never read
    for i in range(lo // P, q_pos // P + 1):
        page = tl.load(Table + b * s_tb + i).to(tl.int64)
        pos = i * P + t
        ok = (t < P) & (pos <= q_pos) & (pos >= lo)
        k_ptr = K + page * s_kp + t[:, None] * s_kt + kvh * s_kh + d[None, :]
        k = tl.load(k_ptr, mask=ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        s = tl.sum(k * q[None, :], axis=1) * scale
        if HAS_SOFTCAP:
            # tanh(x) = 2 * sigmoid(2x) - 1, which stays finite for any x
            s = softcap * (2.0 * tl.sigmoid(2.0 * s / softcap) - 1.0)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        v_ptr = V + page * s_vp + t[:, None] * s_vt + kvh * s_vh + d[None, :]
        v = tl.load(v_ptr, mask=ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        denom = denom * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m = m_new
    if HAS_SINKS:
        # the sink joins the max too, so a large sink logit cannot overflow
        sink = tl.load(Sinks + h).to(tl.float32)
        m_new = tl.maximum(m, sink)
        alpha = tl.exp(m - m_new)
        denom = denom * alpha + tl.exp(sink - m_new)
        acc = acc * alpha
    tl.store(Out + b * s_ob + h * s_oh + d, (acc / denom).to(Out.dtype.element_ty), mask=d_ok)


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                 q_pos: torch.Tensor, *, scale: float, window: int = 0, chunk: int = 0, softcap: float = 0.0,
                 sinks: torch.Tensor | None = None) -> torch.Tensor:
    """Decode attention: q [B, Hq, D], seq b's one query at position
    q_pos[b]; page_table [B, W] holds its page ids by page index (entries
    before its window or chunk are never read, so released ones may be 0).
    k_cache / v_cache are [num_pages, P, Hkv, D] views with a contiguous
    last dim, in any float dtype (scores and sums are fp32).  Returns
    [B, Hq, D] in q's dtype; reads only.  Raises ValueError on a
    non-contiguous last dim."""
    B, Hq, D = q.shape
    _, P, Hkv, _ = k_cache.shape
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("q, k_cache and v_cache need a contiguous last dimension")
    out = torch.empty_like(q)
    sink_t = sinks.contiguous() if sinks is not None else q  # placeholder pointer, never read
    _decode_kernel[(B, Hq)](
        q, k_cache, v_cache, out, page_table, q_pos, sink_t,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1),
        page_table.stride(0), float(scale), float(softcap or 1.0), int(window), int(chunk),
        GROUP=Hq // Hkv, P=P, BLOCK_P=triton.next_power_of_2(P), D=D, BLOCK_D=triton.next_power_of_2(D),
        HAS_WINDOW=window > 0, HAS_CHUNK=chunk > 0, HAS_SOFTCAP=bool(softcap), HAS_SINKS=sinks is not None)
    return out
