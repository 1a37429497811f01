"""EngineConfig validation."""

import pytest

from jenga.engine.config import EngineConfig


def test_defaults_are_valid_and_map_to_the_scheduler():
    cfg = EngineConfig()
    assert (cfg.model, cfg.allocator, cfg.kv_cache_memory, cfg.page_tokens) == (None, "jenga", None, 16)
    sc = EngineConfig(max_num_seqs=3, max_num_batched_tokens=64, enable_prefix_caching=False,
                      enable_chunked_prefill=False, mamba_checkpoint_interval=32).scheduler_config()
    assert (sc.max_num_seqs, sc.max_num_batched_tokens, sc.enable_prefix_caching,
            sc.enable_chunked_prefill, sc.mamba_checkpoint_interval) == (3, 64, False, False, 32)


@pytest.mark.parametrize("field,value", [
    ("allocator", "buddy"), ("kv_cache_memory", 0), ("kv_cache_memory", 1.5), ("gpu_memory_utilization", 0.0),
    ("gpu_memory_utilization", 1.2), ("page_tokens", 0), ("max_num_seqs", -1), ("max_num_batched_tokens", True),
    ("max_model_len", 1), ("device", "tpu"), ("device", "cpu:1"), ("dtype", "int8"), ("seed", "x"),
    ("enable_prefix_caching", 1), ("mamba_checkpoint_interval", 0), ("mamba_checkpoint_interval", True),
    ("mamba_checkpoint_interval", "auto"), ("model", ""),
    ("cpu_threads", 0), ("device", None), ("tensor_parallel_size", 0), ("tensor_parallel_size", 1.0),
    ("distributed_timeout_s", 0), ("distributed_timeout_s", "60"),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**{field: value})


def test_mamba_checkpoint_interval_defaults_to_auto_for_the_scheduler_too():
    assert EngineConfig().mamba_checkpoint_interval is None
    assert EngineConfig().scheduler_config().mamba_checkpoint_interval is None


def test_valid_devices():
    for dev in ("auto", "cpu", "cuda", "cuda:1"):
        assert EngineConfig(device=dev).device == dev


def test_max_waiting_reaches_the_scheduler_and_is_validated():
    from jenga.engine.config import EngineConfig

    assert EngineConfig(max_waiting=3).scheduler_config().max_waiting == 3
    with pytest.raises(ValueError, match="max_waiting"):
        EngineConfig(max_waiting=0)


def test_tensor_parallel_refuses_a_draft_model():
    with pytest.raises(ValueError, match="tensor_parallel_size > 1 does not support a speculative_model"):
        EngineConfig(tensor_parallel_size=2, speculative_model="/d", num_speculative_tokens=2)
