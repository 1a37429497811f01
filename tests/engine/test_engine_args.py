"""vLLM's engine-argument names onto EngineConfig (one source of truth with
SchedulerConfig), speculative_config, and generation-config defaults."""

import json
from dataclasses import fields

import pytest

from jenga.engine.config import EngineConfig
from jenga.engine.engine_args import engine_config, generation_defaults, speculative_fields
from jenga.sched.config import SchedulerConfig


def test_scheduler_fields_have_one_source():
    eng, sched = EngineConfig(), SchedulerConfig()
    for f in fields(SchedulerConfig):
        assert getattr(eng, f.name) == getattr(sched, f.name), f.name   # one default each
    assert eng.scheduler_config() == sched
    assert EngineConfig(max_num_seqs=3, mixed_batches=False).scheduler_config() == \
        SchedulerConfig(max_num_seqs=3, mixed_batches=False)


def test_vllm_names_map_onto_jenga_fields():
    cfg = engine_config("m", kv_cache_memory_bytes=1 << 20, block_size=8, max_num_seqs=4, max_model_len=64,
                        enable_prefix_caching=False, enforce_eager=True, tensor_parallel_size=1,
                        kv_cache_dtype="auto", seed=3, skip_tokenizer_init=True, tokenizer="t",
                        gpu_memory_utilization=0.5, dtype="float32", max_num_batched_tokens=32,
                        enable_chunked_prefill=False)
    assert (cfg.model, cfg.kv_cache_memory, cfg.page_tokens, cfg.max_num_seqs, cfg.max_model_len) == \
        ("m", 1 << 20, 8, 4, 64)
    assert engine_config(kv_cache_memory=5, page_tokens=4) == engine_config(kv_cache_memory_bytes=5, block_size=4)


@pytest.mark.parametrize("kw, match", [
    ({"max_num_seq": 4}, "unknown engine argument 'max_num_seq' \\(did you mean 'max_num_seqs'\\?\\)"),
    ({"swap_space": 4}, "unknown engine argument 'swap_space'"),
    ({"block_size": 8, "page_tokens": 8}, "page_tokens: sets page_tokens, which block_size"),
    ({"tensor_parallel_size": 2, "speculative_config": {"model": "d", "num_speculative_tokens": 1}},
     "tensor_parallel_size > 1 does not support a speculative_model"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size must be a positive integer"),
    ({"kv_cache_dtype": "int3"}, "kv_cache_dtype"),
    ({"enforce_eager": "yes"}, "enforce_eager must be a bool"),
    ({"max_num_batched_tokens": True}, "max_num_batched_tokens"),
])
def test_bad_arguments_are_value_errors_naming_them(kw, match):
    with pytest.raises(ValueError, match=match):
        engine_config(**kw)


def test_speculative_config_in_vllms_dict_and_json_forms():
    want = {"speculative_model": "d", "num_speculative_tokens": 3}
    assert speculative_fields({"model": "d", "num_speculative_tokens": 3}) == want
    assert speculative_fields('{"model": "d", "num_speculative_tokens": 3, "method": "draft_model"}') == want
    cfg = engine_config("t", speculative_config={"model": "d", "num_speculative_tokens": 2})
    assert (cfg.speculative_model, cfg.num_speculative_tokens) == ("d", 2)
    for bad, match in (({"model": "d"}, "needs both"), ({"method": "ngram", "model": "d", "num_speculative_tokens": 1},
                                                         "ngram"),
                       ({"model": "d", "num_speculative_tokens": 1, "draft_tp": 1}, "unsupported keys"),
                       ("{nope", "not valid JSON"), ([1], "must be a dict")):
        with pytest.raises(ValueError, match=match):
            speculative_fields(bad)


def test_generation_defaults_follow_vllms_modes(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_p": 0.9, "top_k": None, "max_new_tokens": 99, "do_sample": True, "eos_token_id": 2}))
    assert generation_defaults("auto", tmp_path) == {"temperature": 0.6, "top_p": 0.9, "max_tokens": 99}
    assert generation_defaults("vllm", tmp_path) == {}
    other = tmp_path / "other"
    other.mkdir()
    assert generation_defaults("auto", other) == {}
    assert generation_defaults(str(tmp_path), other)["temperature"] == 0.6
    with pytest.raises(ValueError, match="no generation_config.json"):
        generation_defaults(str(other), tmp_path)
