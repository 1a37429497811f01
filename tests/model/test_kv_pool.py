"""KVPool: page-first byte layout, zero-copy views, copies and zeros."""

from __future__ import annotations

import pytest
import torch

from jenga.memory.plan import Group, MemoryPlan
from jenga.memory.spec import LayerSpec
from jenga.model.kv_pool import KVPool
from jenga.sched.step import PageCopy

FULL = LayerSpec("full", "float32", 2, 4)          # 64 B per token
SLIDE = LayerSpec("sliding", "float32", 1, 4, window=8)   # 32 B per token
MAMBA = LayerSpec("mamba", "float32", conv_state=(3, 2), ssm_state=(2, 5), state_dtype="float32")
VISION = LayerSpec("vision", "float32", hidden_size=6)


def _plan() -> MemoryPlan:
    # full: 2 layers x 4 tok x 64 B = 512 B; sliding: 1 layer x 4 tok x 32 B = 128 B
    # mamba: layer page 64 B (conv 24 B, ssm 40 B); vision: 2 tok x 24 B = 48 B, padded to 64 B
    groups = (Group(0, FULL, (0, 2), 4, 256, 2), Group(1, SLIDE, (1,), 4, 128, 8),
              Group(2, MAMBA, (3,), 1, 64, 16), Group(3, VISION, (4,), 2, 64, 16, padding_bytes=16))
    return MemoryPlan(groups, 1024, 3)


def _zeroed_pool(**kw) -> KVPool:
    """The pool starts unzeroed (nothing may read old bytes); the layout
    checks below zero it so they can count exactly the bytes they write."""
    pool = KVPool(_plan(), **kw)
    pool.buffer.zero_()
    return pool


def _floats(pool: KVPool) -> torch.Tensor:
    return pool.buffer.view(torch.float32)


def test_kv_views_share_storage_and_follow_page_first_layout():
    pool = _zeroed_pool()
    k, v = pool.kv_view(2)            # layer j=1 of group 0
    assert k.shape == v.shape == (6, 4, 2, 4)
    assert k.untyped_storage().data_ptr() == pool.buffer.untyped_storage().data_ptr()
    assert k.stride() == (128, 8, 4, 1)       # page stride = small page (512 B / 4)
    k[3, 2, 1, 0] = 7.0
    v[3, 2, 1, 0] = 9.0
    # page 3 of group 0 = large page 1, slot 1 -> byte 1024 + 512; layer j=1 at +256;
    # token 2, head 1 -> element 2*8 + 1*4; V after the 4*2*4 K elements
    base = (1024 + 512 + 256) // 4 + 2 * 8 + 4
    f = _floats(pool)
    assert f[base].item() == 7.0 and f[base + 32].item() == 9.0
    assert int((f != 0).sum()) == 2
    assert pool.kv_view(2)[0] is k           # cached view


def test_groups_view_the_same_bytes_by_page_id():
    pool = _zeroed_pool()
    k1, _ = pool.kv_view(1)           # sliding group: 8 small pages of 128 B per large page
    assert k1.shape == (24, 4, 1, 4)
    k1[9, 0, 0, 0] = 5.0              # large page 1, slot 1 -> byte 1024 + 128
    assert _floats(pool)[(1024 + 128) // 4].item() == 5.0
    k0, v0 = pool.kv_view(0)          # group 0's page 2 is large page 1 slot 0: byte 128 is its V
    assert k0[2].abs().sum().item() == 0.0 and v0[2, 0, 0, 0].item() == 5.0


def test_state_and_embed_views():
    pool = _zeroed_pool()
    conv, ssm = pool.state_view(3)
    assert conv.shape == (48, 3, 2) and ssm.shape == (48, 2, 5)
    conv[5, 2, 1] = 1.0
    ssm[5, 0, 0] = 2.0
    f = _floats(pool)
    assert f[(5 * 64) // 4 + 5].item() == 1.0 and f[(5 * 64 + 24) // 4].item() == 2.0
    emb = pool.embed_view(3)
    assert emb.shape == (48, 2, 6)
    emb[1, 1, 0] = 3.0
    assert f[(64 + 24) // 4].item() == 3.0


def test_copies_and_zeros_move_whole_small_pages():
    pool = _zeroed_pool()
    k, v = pool.kv_view(0)
    k[1].fill_(1.5)
    v[1].fill_(2.5)
    pool.apply_copies([PageCopy(0, 1, 4)])
    assert torch.equal(k[4], k[1]) and torch.equal(v[4], v[1]) and k[4].sum().item() == 1.5 * 32
    pool.apply_zeros([(0, 1)])
    assert k[1].abs().sum().item() == 0.0 and k[4].sum().item() == 1.5 * 32
    with pytest.raises(ValueError, match="page 6 out of range"):
        pool.apply_copies([PageCopy(0, 6, 0)])
    with pytest.raises(ValueError, match="gid 7"):
        pool.apply_zeros([(7, 0)])


def test_dtype_override_must_fit_the_plan():
    pool = _zeroed_pool(dtype_override=torch.bfloat16)
    k, _ = pool.kv_view(0)
    assert k.dtype == torch.bfloat16 and k.stride() == (256, 8, 4, 1)
    plan16 = MemoryPlan((Group(0, LayerSpec("full", "bfloat16", 2, 4), (0,), 4, 128, 8),), 1024, 1)
    with pytest.raises(ValueError, match="needs 256 B per page.*holds 128 B"):
        KVPool(plan16, dtype_override=torch.float32).kv_view(0)
    assert KVPool(plan16).kv_view(0)[0].dtype == torch.bfloat16


def test_bad_layers_raise():
    pool = _zeroed_pool()
    with pytest.raises(ValueError, match="layer_idx 9"):
        pool.kv_view(9)
    with pytest.raises(ValueError, match="stores no K/V"):
        pool.kv_view(3)
    with pytest.raises(ValueError, match="holds no recurrent state"):
        pool.state_view(0)
    with pytest.raises(ValueError, match="not a single vision"):
        pool.embed_view(0)
    twice = MemoryPlan((Group(0, FULL, (0,), 4, 256, 4), Group(1, SLIDE, (0,), 4, 128, 8)), 1024, 1)
    with pytest.raises(ValueError, match="layer 0 appears in groups 0 and 1"):
        KVPool(twice)
