"""bench paper: each row is the artifact's command rebuilt (engine, flags,
workload), and a small run of a row compares every allocator."""

from __future__ import annotations

import pytest

from jenga.bench import paper


def _row(name):
    return next(e for e in paper.EXPERIMENTS if e.name == name)


def test_rows_carry_the_artifact_flags():
    shape = paper.row_shape(_row("ministral"))
    cfg, cost = paper.engine_settings(_row("ministral"), shape)
    # --enable-chunked-prefill=False --enable-prefix-caching, no --enforce-eager
    assert not cfg.enable_chunked_prefill and not cfg.mixed_batches and cfg.enable_prefix_caching
    assert cfg.max_num_batched_tokens == shape.max_context and cost.graph_decode
    assert cfg.shared_prefill_wait == 0      # vLLM has no such wait
    cfg, cost = paper.engine_settings(_row("gemma-3"), paper.row_shape(_row("gemma-3")))
    assert cfg.enable_chunked_prefill and cfg.max_num_batched_tokens == 8192 and cfg.max_num_seqs == 1024
    assert cost.layer_overhead_s == 0 and cfg.enable_prefix_caching
    cfg, cost = paper.engine_settings(_row("mllama"), paper.row_shape(_row("mllama")))
    assert cfg.max_num_seqs == 52 and not cfg.enable_prefix_caching and not cost.graph_decode
    assert cost.layer_overhead_s > 0


def test_row_shape_applies_max_model_len_and_fp8_weights():
    from jenga.memory.shapes.presets import get_preset

    char = paper.row_shape(_row("character-ai"))
    base = get_preset("character-ai-70b")
    assert char.max_context == 65536 and char.weights_bytes == base.weights_bytes // 2
    assert paper.row_shape(_row("jamba")).max_context == 8192
    # Llama 4: vLLM v1, TP 8, --max-model-len 1000000, whole article groups
    llama4 = _row("llama4")
    assert (llama4.engine, llama4.tp, paper.row_shape(llama4).max_context) == ("v1", 8, 1_000_000)
    assert len(llama4.workload_args["articles_per_doc"]) * 4 == llama4.num_requests == 160
    with pytest.raises(ValueError, match="engine"):
        paper.Experiment("x", "llama-3.1-8b", "sharegpt", 1, engine="v2")


def test_small_run_compares_all_allocators_with_the_artifact_static_split():
    row = paper.run(_row("character-ai"), num_requests=6)
    comp = row["comparison"]
    assert [r.allocator for r in comp.reports] == paper.ALLOCATORS
    assert all(r.finished == 6 and r.throughput_rps > 0 for r in comp.reports)
    assert comp.speedups["jenga"] == 1.0
    text = paper.render([row])
    assert text.count("| character-ai (") == 4 and "| v0 |" in text
