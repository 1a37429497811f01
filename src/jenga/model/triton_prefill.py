"""Triton paged-prefill kernel: varlen query chunks over their cached prefix.

Imported only when triton is installed (triton_attention.py dispatches to
it).  One launch covers every seq of a step, whatever its number of new
tokens (decodes included): program (block, kv head) takes BLOCK_M
consecutive new tokens of one seq together with the GROUP query heads that
share the kv head (GQA without repeating K/V), and walks the keys they see
in tiles of BLOCK_N positions.  Each key's page is looked up in the group's
page table and read in place in the layer's strided pool view, so a tile
may span several pages of any size, and pages before the block's window or
chunk (released NO_PAGE entries, stored as 0) are never touched.  Scores
and the online softmax are fp32; masks are causal over the cached prefix,
sliding window W (p sees p-W+1..p) and chunked-local C (p sees
floor(p/C)*C..p); logit soft-capping and attention sinks as in the portable
path (model/attention.py) it is checked against.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _prefill_kernel(Q, K, V, Out, Table, QStart, CtxLen, Sinks,
                    s_qt, s_qh, s_kp, s_kt, s_kh, s_vp, s_vt, s_vh, s_ot, s_oh, s_tb,
                    table_width, blocks_per_seq, scale, softcap, window, chunk,
                    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, P: tl.constexpr, D: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    HAS_WINDOW: tl.constexpr, HAS_CHUNK: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
                    HAS_SINKS: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    kvh = tl.program_id(1)
    b = pid // blocks_per_seq
    blk = pid % blocks_per_seq
    row0 = tl.load(QStart + b)
    q_len = tl.load(QStart + b + 1) - row0
    first_pos = tl.load(CtxLen + b) - q_len         # position of the seq's first new token
    # rows r of this program: token blk*BLOCK_M + r // GROUP_PAD, head kvh*GROUP + r % GROUP_PAD
    r = tl.arange(0, BLOCK_M * GROUP_PAD)
    tok = blk * BLOCK_M + r // GROUP_PAD
    head = kvh * GROUP + r % GROUP_PAD
    row_ok = (tok < q_len) & (r % GROUP_PAD < GROUP)
    q_pos = first_pos + tok
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    q = tl.load(Q + (row0 + tok)[:, None] * s_qt + head[:, None] * s_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    lo = q_pos * 0                     # first key position each row sees
    if HAS_WINDOW:
        lo = tl.maximum(q_pos - window + 1, 0)
    if HAS_CHUNK:
        lo = q_pos // chunk * chunk
    # keys this block needs: from its first row's scope to its last row
    last_tok = tl.minimum(blk * BLOCK_M + BLOCK_M, q_len) - 1
    k_lo = first_pos + blk * BLOCK_M
    if HAS_WINDOW:
        k_lo = tl.maximum(k_lo - window + 1, 0)
    elif HAS_CHUNK:
        k_lo = k_lo // chunk * chunk
    else:
        k_lo = 0
    k_hi = first_pos + last_tok        # below k_lo (no loop) for an empty block
    m = tl.full((BLOCK_M * GROUP_PAD,), -1.0e30, tl.float32)   # finite: no exp(-inf + inf)
    denom = tl.zeros((BLOCK_M * GROUP_PAD,), tl.float32)
    acc = tl.zeros((BLOCK_M * GROUP_PAD, BLOCK_D), tl.float32)
    n = tl.arange(0, BLOCK_N)
    for k0 in range(k_lo, k_hi + 1, BLOCK_N):
        pos = k0 + n
        in_range = (pos <= k_hi) & (pos // P < table_width)
        page = tl.load(Table + b * s_tb + pos // P, mask=in_range, other=0).to(tl.int64)
        slot = pos % P
        kv_ok = in_range[:, None] & d_ok[None, :]
        k = tl.load(K + page[:, None] * s_kp + slot[:, None] * s_kt + kvh * s_kh + d[None, :],
                    mask=kv_ok, other=0.0).to(q.dtype)      # a cache in another dtype (fp8) is read as q's
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION).to(tl.float32) * scale
        if HAS_SOFTCAP:
            # tanh(x) = 2 * sigmoid(2x) - 1, which stays finite for any x
            s = softcap * (2.0 * tl.sigmoid(2.0 * s / softcap) - 1.0)
        ok = in_range[None, :] & (pos[None, :] <= q_pos[:, None]) & (pos[None, :] >= lo[:, None])
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        v = tl.load(V + page[:, None] * s_vp + slot[:, None] * s_vt + kvh * s_vh + d[None, :],
                    mask=kv_ok, other=0.0).to(q.dtype)
        denom = denom * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION).to(tl.float32)
        m = m_new
    if HAS_SINKS:
        # the sink joins the max too, so a large sink logit cannot overflow
        sink = tl.load(Sinks + head, mask=row_ok, other=0.0).to(tl.float32)
        m_new = tl.maximum(m, sink)
        alpha = tl.exp(m - m_new)
        denom = denom * alpha + tl.exp(sink - m_new)
        acc = acc * alpha[:, None]
    denom = tl.where(row_ok, denom, 1.0)
    out = acc / denom[:, None]
    tl.store(Out + (row0 + tok)[:, None] * s_ot + head[:, None] * s_oh + d[None, :],
             out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


def block_sizes(group: int, head_size: int, interpret: bool) -> tuple[int, int, int]:
    """(BLOCK_M tokens, BLOCK_N keys, warps) per program.  On a GPU about
    64 query rows (tokens x heads of a kv head) and 64 keys, with 8 warps
    past head size 64, and 32 x 32 for heads over 128: the largest tiles
    that compile for sm_90 without register spills (checked by
    tests/model/test_triton_compile.py); tl.dot needs at least 16 of each.
    Under the interpreter, whose cost is per operation, 16 and 16."""
    rows, keys, warps = (16, 16, 1) if interpret else (64, 64, 4) if head_size <= 64 else \
        (64, 64, 8) if head_size <= 128 else (32, 32, 8)
    return max(1, rows // triton.next_power_of_2(group)), keys, warps


def paged_prefill(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                  query_start: torch.Tensor, context_lens: torch.Tensor, max_query_len: int, *, scale: float,
                  window: int = 0, chunk: int = 0, softcap: float = 0.0,
                  sinks: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of every new token of a step: q [T, Hq, D]; seq b's rows
    are query_start[b]..query_start[b+1] ([B+1] on the device) at positions
    context_lens[b] - its row count .. context_lens[b] - 1; page_table
    [B, W] holds its page ids by page index (entries before a row's window
    or chunk are never read).  max_query_len: the most rows of one seq (a
    host int, so no device read).  k_cache / v_cache are [num_pages, P,
    Hkv, D] views with a contiguous last dim, in q's dtype or another (an
    fp8 cache): keys and values are converted to q's dtype as they load.
    Returns [T, Hq, D] in q's dtype; reads only.  Raises ValueError on a non-contiguous last dim or
    a page table with a strided row."""
    T, Hq, D = q.shape
    _, P, Hkv, _ = k_cache.shape
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("q, k_cache and v_cache need a contiguous last dimension")
    if page_table.stride(-1) != 1:
        raise ValueError("page_table needs a contiguous last dimension")
    out = torch.empty_like(q)
    B = query_start.shape[0] - 1
    if T == 0 or B == 0:
        return out
    group = Hq // Hkv
    interpret = not q.is_cuda
    # The interpreter multiplies 16-bit floats as their integer bit patterns
    # (triton 3.9), so there the dots take fp32 copies; a GPU uses bf16 MMA.
    upcast = interpret and q.dtype != torch.float32
    block_m, block_n, warps = block_sizes(group, D, interpret)
    blocks = triton.cdiv(max_query_len, block_m)
    sink_t = sinks.contiguous() if sinks is not None else q  # placeholder pointer, never read
    _prefill_kernel[(B * blocks, Hkv)](
        q, k_cache, v_cache, out, page_table, query_start, context_lens, sink_t,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1),
        page_table.stride(0), page_table.shape[1], blocks, float(scale), float(softcap or 1.0),
        int(window), int(chunk),
        GROUP=group, GROUP_PAD=triton.next_power_of_2(group), P=P, D=D, BLOCK_D=triton.next_power_of_2(D),
        BLOCK_M=block_m, BLOCK_N=block_n, HAS_WINDOW=window > 0, HAS_CHUNK=chunk > 0,
        HAS_SOFTCAP=bool(softcap), HAS_SINKS=sinks is not None,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 or upcast else "tf32", UPCAST=upcast, num_warps=warps)
    return out
