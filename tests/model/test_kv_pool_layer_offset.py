"""KVPool.with_layer_offset: a second model's view of the same pool, its
layer i being plan layer offset + i."""

import pytest
import torch

from jenga.memory.plan import Group, MemoryPlan
from jenga.memory.spec import LayerSpec
from jenga.model.kv_pool import KVPool

MAIN = LayerSpec("full", "float32", 2, 8)                 # 128 B per token
DRAFT = LayerSpec("full", "float32", 1, 8, model="draft")  # 64 B per token


def _plan() -> MemoryPlan:
    # main: layers 0, 1 (4 tokens x 128 B x 2 = 1 KiB pages); draft: layer 2 (256 B pages)
    return MemoryPlan((Group(0, MAIN, (0, 1), 4, 512, 1), Group(1, DRAFT, (2,), 4, 256, 4)), 1024, 4)


def test_shifted_view_shares_storage_and_maps_layers():
    pool = KVPool(_plan())
    view = pool.with_layer_offset(2)
    assert view.group_of(0) == 1 and view.buffer is pool.buffer
    k, v = view.kv_view(0)
    k_plan, _ = pool.kv_view(2)
    assert k.shape == (16, 4, 1, 8)
    k[5, 3] = 7.0
    assert torch.equal(k_plan[5, 3], torch.full((1, 8), 7.0))
    with pytest.raises(ValueError, match="layer_idx 1 is in no group"):
        view.kv_view(1)                       # plan layer 3: none; the target's layers are hidden
    assert pool.kv_view(0)[0].shape == (4, 4, 2, 8)   # the original is unchanged


def test_bad_offset():
    with pytest.raises(ValueError, match="offset must be a non-negative integer"):
        KVPool(_plan()).with_layer_offset(-1)
