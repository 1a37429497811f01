"""Paged attention (portable path) against a dense float64 reference.

Pages are scattered (not sequential), pages released out of a window or a
past chunk are NO_PAGE in the table and their old bytes poisoned with NaN,
so reading one would show in the output."""

from __future__ import annotations

import math

import pytest
import torch

from jenga.model.attention import paged_attention
from jenga.memory.policies import first_key
from jenga.model.attn_metadata import build_group_metadata
from jenga.model.kv_pool import KVPool
from jenga.sched.step import NO_PAGE, SeqStep, StepPlan
from model_helpers import GREEDY, plan_from_specs, spec_for

P, HKV, D = 4, 2, 8


def dense_reference(q, K, V, start, scale, window, chunk, softcap, sinks):
    """q [n, Hq, D] at positions start.. ; K, V [L, Hkv, D] of every position."""
    q, K, V = q.double(), K.double(), V.double()
    n, Hq, _ = q.shape
    out = torch.zeros(n, Hq, D, dtype=torch.float64)
    for i in range(n):
        p = start + i
        keys = [j for j in range(p + 1) if (not window or j > p - window) and (not chunk or j // chunk == p // chunk)]
        for h in range(Hq):
            kh = h // (Hq // K.shape[1])
            s = K[keys, kh] @ q[i, h] * scale
            if softcap:
                s = softcap * torch.tanh(s / softcap)
            m = s.max()
            w = torch.exp(s - m)
            denom = w.sum() + (math.exp(sinks[h].item() - m.item()) if sinks is not None else 0.0)
            out[i, h] = (w / denom) @ V[keys, kh]
    return out


def run_case(seqs, hq, group_window=0, group_chunk=0, window=0, chunk=0, softcap=0.0, sinks=False,
             scale=0.35, seed=0, backend="portable"):
    """seqs: (start, num_new) per seq.  Returns (ours, reference) [T, Hq, D]."""
    g = torch.Generator().manual_seed(seed)
    group_spec = spec_for(HKV, D, group_window, group_chunk)
    plan = plan_from_specs([group_spec], P, 64)
    pool = KVPool(plan)
    k_cache, v_cache = pool.kv_view(0)
    pool.buffer.view(torch.float32).fill_(float("nan"))      # every unwritten byte is poison
    free = torch.randperm(plan.num_small_pages(0), generator=g).tolist()
    sink_t = torch.randn(hq, generator=g) if sinks else None
    steps, qs, ks, vs, refs = [], [], [], [], []
    for r, (start, n) in enumerate(seqs):
        L = start + n
        K, V = torch.randn(L, HKV, D, generator=g), torch.randn(L, HKV, D, generator=g)
        q = torch.randn(n, hq, D, generator=g)
        lo = first_key(group_spec, start) // P
        table = [NO_PAGE if i < lo else free.pop() for i in range((L + P - 1) // P)]
        for pos in range(lo * P, start):                      # the cached prefix still in scope
            k_cache[table[pos // P], pos % P] = K[pos]
            v_cache[table[pos // P], pos % P] = V[pos]
        steps.append(SeqStep(f"r{r}", tuple(range(n)), start, (tuple(table),), True, GREEDY, L))
        qs.append(q), ks.append(K[start:]), vs.append(V[start:])
        refs.append(dense_reference(q, K, V, start, scale, window, chunk, softcap, sink_t))
    meta = build_group_metadata(StepPlan(0, tuple(steps)), plan.groups[0], torch.device("cpu"))
    out = paged_attention(torch.cat(qs), torch.cat(ks), torch.cat(vs), k_cache, v_cache, meta, scale=scale,
                          window=window, chunk=chunk, softcap=softcap, sinks=sink_t, backend=backend)
    written = k_cache[meta.slot_pages, meta.slot_offsets]
    assert torch.equal(written, torch.cat(ks))                # new keys landed in their slots
    return out, torch.cat(refs)


MIXED = [(9, 1), (20, 1), (0, 5), (6, 5), (13, 7), (3, 1)]   # decodes, equal-length chunks, a longer one

CASES = {
    "prefill_with_cached_prefix": dict(seqs=[(10, 7)], hq=4),
    "decode_batch": dict(seqs=[(5, 1), (12, 1), (29, 1)], hq=4),
    "mixed_batch_mha_sdpa": dict(seqs=MIXED, hq=2),
    "mixed_batch_gqa": dict(seqs=MIXED, hq=4),
    "sliding_released_pages": dict(seqs=MIXED, hq=4, group_window=6, window=6),
    "chunked_local": dict(seqs=MIXED + [(16, 2)], hq=4, group_chunk=8, chunk=8),
    "softcap_sliding": dict(seqs=MIXED, hq=4, group_window=6, window=6, softcap=2.0, scale=1.5),
    "sinks_sliding": dict(seqs=MIXED, hq=4, group_window=5, window=5, sinks=True),
    "sinks_full": dict(seqs=MIXED, hq=4, sinks=True),
    "narrow_window_in_full_group": dict(seqs=MIXED, hq=4, window=3),
    "narrow_window_in_sliding_group": dict(seqs=MIXED, hq=4, group_window=9, window=4),
    # fresh prompts (no cached prefix) and long chunks after a prefix: the
    # cpu backend's causal fast path and its gather path
    "fresh_prompts_gqa": dict(seqs=[(0, 7), (0, 7), (0, 3), (0, 1)], hq=4),
    "fresh_prompt_window_cuts": dict(seqs=[(0, 11), (0, 11)], hq=4, group_window=6, window=6),
    "fresh_prompt_chunk_cuts": dict(seqs=[(0, 19)], hq=4, group_chunk=8, chunk=8),
    "fresh_softcap_sinks": dict(seqs=[(0, 9)], hq=4, softcap=2.0, sinks=True, scale=1.5),
    "long_chunk_after_prefix": dict(seqs=[(7, 21), (30, 21), (2, 1)], hq=4),
    "long_chunk_sliding_softcap": dict(seqs=[(13, 20)], hq=4, group_window=6, window=6, softcap=2.0, scale=1.5),
    "long_chunk_chunked_sinks": dict(seqs=[(5, 22)], hq=2, group_chunk=8, chunk=8, sinks=True),
}
BACKENDS = ("portable", "cpu")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_dense_reference(name, backend):
    ours, ref = run_case(**CASES[name], backend=backend)
    assert not torch.isnan(ours).any()
    assert (ours.double() - ref).abs().max().item() < 1e-5


def test_scope_wider_than_group_raises():
    with pytest.raises(ValueError, match="window=8 chunk=0 exceeds group 0"):
        run_case([(9, 1)], 4, group_window=6, window=8)
    with pytest.raises(ValueError, match="exceeds group 0"):
        run_case([(9, 1)], 4, group_window=6)                 # a full layer on sliding pages


def test_unknown_backend_raises():
    z = torch.zeros(1, 1, 1)
    with pytest.raises(ValueError, match="backend must be one of"):
        paged_attention(z, z, z, z, z, None, scale=1.0, backend="cuda")
