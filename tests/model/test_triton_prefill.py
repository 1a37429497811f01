"""The Triton varlen paged-prefill kernel and the K/V store against the
dense reference, through paged_attention(backend="triton") on the same
NaN-poisoned, scattered pools as the portable path (CPU, TRITON_INTERPRET=1
from tests/conftest.py).  Under the interpreter a program takes 16
query rows (tokens x heads of one kv head) and 16 keys, so the long cases
span several query blocks and key tiles of several pages each."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from test_attention import CASES, run_case

LONG = [(0, 20), (30, 10), (7, 1)]     # a fresh prompt, a cached prefix over 3 key tiles, a decode
EXTRA = {
    "long_full_gqa3": dict(seqs=LONG, hq=6),                       # 3 heads per kv head, padded to 4
    "long_sliding_released": dict(seqs=LONG, hq=4, group_window=6, window=6),
    "long_chunked_softcap_sinks": dict(seqs=LONG, hq=4, group_chunk=8, chunk=8, softcap=2.0, sinks=True),
    "long_mha_narrow_window": dict(seqs=LONG, hq=2, group_window=13, window=5),
}


@pytest.mark.parametrize("name", sorted(set(CASES) - {"decode_batch"}) + sorted(EXTRA))   # decodes: test_triton_decode
def test_triton_matches_dense_reference(name):
    ours, ref = run_case(**{**CASES, **EXTRA}[name], backend="triton")
    assert not torch.isnan(ours).any()
    assert (ours.double() - ref).abs().max().item() < 1e-5


def test_store_kv_skips_padding_rows():
    from jenga.model.triton_attention import store_kv
    k_cache = torch.full((3, 4, 2, 8), float("nan"))
    v_cache = torch.full((3, 4, 2, 8), float("nan"))
    k, v = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    store_kv(k, v, k_cache, v_cache, torch.tensor([2, -1, 0]), torch.tensor([1, 3, 3]))
    assert torch.equal(k_cache[2, 1], k[0]) and torch.equal(v_cache[0, 3], v[2])
    assert torch.isnan(k_cache[1]).all() and k_cache[~torch.isnan(k_cache)].numel() == 2 * 2 * 8


@pytest.mark.parametrize("decode", [False, True])
def test_a_cache_in_another_dtype_is_read_as_q_dtype(decode):
    """fp32 queries over a bf16 cache (as over an fp8 one): the kernels
    convert keys and values as they load, so the result equals attending
    over an fp32 cache holding the same (bf16-rounded) values."""
    from jenga.model.triton_decode import paged_decode
    from jenga.model.triton_prefill import paged_prefill
    g = torch.Generator().manual_seed(3)
    k16 = torch.randn(6, 4, 2, 8, generator=g).bfloat16()
    v16 = torch.randn(6, 4, 2, 8, generator=g).bfloat16()
    table = torch.tensor([[4, 1, 5], [2, 0, 3]])
    kw = dict(scale=0.4, softcap=3.0)
    if decode:
        q, pos = torch.randn(2, 4, 8, generator=g), torch.tensor([9, 6])
        ours = paged_decode(q, k16, v16, table, pos, **kw)
        ref = paged_decode(q, k16.float(), v16.float(), table, pos, **kw)
    else:
        q, starts, ctx = torch.randn(7, 4, 8, generator=g), torch.tensor([0, 4, 7], dtype=torch.int32), \
            torch.tensor([10, 7], dtype=torch.int32)
        ours = paged_prefill(q, k16, v16, table, starts, ctx, 4, **kw)
        ref = paged_prefill(q, k16.float(), v16.float(), table, starts, ctx, 4, **kw)
    assert ours.dtype == torch.float32 and not torch.isnan(ours).any()
    assert (ours - ref).abs().max().item() < 1e-6
