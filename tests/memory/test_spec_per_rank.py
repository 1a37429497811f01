"""What one tensor-parallel rank stores of each layer kind (LayerSpec.per_rank)."""

import pytest

from jenga.memory.spec import ModelShape, full, kv_heads_per_rank, mamba, sliding, vision


def test_kv_heads_split_or_replicate():
    assert [kv_heads_per_rank(8, tp) for tp in (1, 2, 4, 8, 16)] == [8, 4, 2, 1, 1]
    assert kv_heads_per_rank(1, 4) == 1
    with pytest.raises(ValueError, match="num_key_value_heads=6 and tensor_parallel_size=4"):
        kv_heads_per_rank(6, 4)
    with pytest.raises(ValueError, match="tensor_parallel_size must be a positive integer"):
        kv_heads_per_rank(8, 0)


def test_per_rank_specs():
    assert full(8, 128).per_rank(2) == full(4, 128)
    assert sliding(4096, 2, 64).per_rank(4) == sliding(4096, 1, 64)   # one replicated head
    assert full(8, 128).per_rank(2).bytes_per_token * 2 == full(8, 128).bytes_per_token
    assert vision(4096).per_rank(8) == vision(4096)                     # the tower is replicated
    m = mamba((8192, 4), (8192, 16), state_dtype="float32")
    assert m.per_rank(2) == mamba((4096, 4), (4096, 16), state_dtype="float32")
    with pytest.raises(ValueError, match="conv_state"):
        mamba((6, 4), (8, 16)).per_rank(4)


def test_shape_per_rank_keeps_model_wide_weights():
    shape = ModelShape("m", (full(8, 64), sliding(16, 8, 64)), 1024, weights_bytes=10, active_params=5)
    two = shape.per_rank(2)
    assert two.layers == (full(4, 64), sliding(16, 4, 64))
    assert (two.weights_bytes, two.active_params, two.max_context) == (10, 5, 1024)
    assert shape.per_rank(1) is shape
