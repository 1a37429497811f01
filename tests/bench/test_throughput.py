"""`jenga bench throughput`: seeded workloads, and the engine run per
allocator with encoder runs counted (on a tiny LLaVA built here)."""

import json
import os
import sys

import pytest
import torch

from jenga.bench.throughput import Result, Workload, make_prompts, run_one, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "model"))
from vlm_helpers import IMAGE, tiny_llava  # noqa: E402


def test_prompts_are_seeded_and_place_images():
    w = Workload(num_requests=3, prompt_len=10, output_len=2, images=2, image_size=(20, 30), seed=4)
    a, b = make_prompts(w, 300, IMAGE), make_prompts(w, 300, IMAGE)
    for x, y in zip(a, b):
        assert x["prompt_token_ids"] == y["prompt_token_ids"]
        assert all(torch.equal(i, j) for i, j in zip(x["multi_modal_data"]["image"], y["multi_modal_data"]["image"]))
    for p in a:
        ids, images = p["prompt_token_ids"], p["multi_modal_data"]["image"]
        assert len(ids) == 12 and ids.count(IMAGE) == 2 and ids[0] != IMAGE and len(images) == 2
        assert all(i.shape[0] == 3 and 10 <= i.shape[1] <= 20 and i.shape[2] == 30 for i in images)
    # every image distinct by default; drawn from a pool of one, all equal
    assert len({i.sum().item() for p in a for i in p["multi_modal_data"]["image"]}) == 6
    same = make_prompts(Workload(3, 10, 2, 1, distinct_images=1), 300, IMAGE)
    assert len({id(p["multi_modal_data"]["image"][0]) for p in same}) == 1
    assert all(isinstance(p, list) and len(p) == 5 for p in make_prompts(Workload(2, 5, 1, 1), 300, None))


def test_bad_workloads():
    with pytest.raises(ValueError, match="prompt_len must be > 0"):
        Workload(prompt_len=0)
    with pytest.raises(ValueError, match="images"):
        Workload(images=-1)


def test_encoder_runs_per_allocator(tmp_path):
    tiny_llava(tmp_path)
    # prompts of 12 + 15 placeholders; chunks of 8 tokens: max-page re-encodes each image per chunk
    w = Workload(num_requests=2, prompt_len=12, output_len=3, images=1, image_size=(16, 16))
    kw = dict(max_num_batched_tokens=8, page_tokens=4, cpu_threads=1)
    jenga = run_one(tmp_path, "jenga", 1 << 20, w, **kw)
    maxp = run_one(tmp_path, "max-page", 1 << 20, w, **kw)
    assert (jenga.requests, jenga.errors, jenga.images, jenga.encoder_runs) == (2, 0, 2, 2)
    assert maxp.images == 2 and maxp.encoder_runs > 2
    text = table("tiny", 1 << 20, [jenga, maxp, Result("static", 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, "too big")])
    assert "| jenga |" in text and "refused: too big" in text and f"| {maxp.encoder_runs} / 2 |" in text
    json.dumps([jenga.__dict__])


# --- the Gemma-2-shaped run, utilisation two ways, the CLI defaults, transformers' reference

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "engine"))
from engine_helpers import tiny_checkpoint  # noqa: E402

from jenga.bench.throughput import (DEFAULT_KV_BYTES, add_args, bound_warning, hf_cache_config,  # noqa: E402
                                    parse_bytes, plot_batches, run_hf, true_need_bytes)


def test_parse_bytes():
    assert [parse_bytes(t) for t in ("6MiB", "6291456", "1gib", "500MB", "2.5KiB", "64b")] == \
        [6 * 2**20, 6291456, 2**30, 500_000_000, 2560, 64]
    for bad in ("0", "-3MiB", "lots"):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_true_need_counts_only_what_layers_read():
    from jenga.memory.planner import build_plan
    from jenga.memory.spec import LayerSpec
    from jenga.sched.request import Request
    specs = [LayerSpec("sliding", "float32", 2, 16, window=8), LayerSpec("full", "float32", 2, 16)]
    ref = build_plan(specs, 1 << 20, allocator="jenga")
    a, b = Request("a", list(range(30))), Request("b", list(range(30)))
    a.num_computed, b.num_computed = 20, 5
    # 256 B per token per layer: a keeps 20 (full) + 8 (window) tokens, b 5 + 5
    assert true_need_bytes(ref, [a]) == 28 * 256
    assert true_need_bytes(ref, [a, b]) == (28 + 10) * 256


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-gemma2")
    tiny_checkpoint("gemma2", path)   # 4 layers alternating window 8 / full, 256 B per token per layer
    return path


def test_window_model_runs_a_larger_batch_than_max_page(gemma):
    w = Workload(num_requests=6, prompt_len=88, output_len=8, images=0)
    kw = dict(max_num_batched_tokens=32, cpu_threads=1)
    jenga, maxp, uni = (run_one(gemma, a, 200 * 1024, w, **kw) for a in ("jenga", "max-page", "uniform"))
    for r in (jenga, maxp, uni):
        assert (r.requests, r.errors, r.preemptions) == (6, 0, 0)
        assert len(r.batch_series) == r.steps and 0 < r.saturated_steps <= r.steps
        assert r.total_tok_per_s == pytest.approx(r.output_tok_per_s * (88 + 8) / 8)
        assert 0 < r.util_true <= 1 and 0 < r.mem_util <= 1
    assert jenga.max_batch > maxp.max_batch and jenga.mean_batch > maxp.mean_batch
    assert jenga.steps < maxp.steps
    # both groups store 256 B per token per layer: uniform's pages equal jenga's, step for step
    assert uni.batch_series == jenga.batch_series
    # max-page's own count calls out-of-window tokens needed; the true need does not
    assert maxp.util_true < maxp.mem_util - 0.1
    assert abs(jenga.util_true - jenga.mem_util) < 0.02
    assert bound_warning([jenga, maxp], max_num_seqs=64) is None
    text = table("tiny", 200 * 1024, [jenga, maxp])
    assert f"| {jenga.mean_batch:.1f} ({jenga.max_batch}) |" in text
    assert f"{100 * maxp.mem_util:.1f}% / {100 * maxp.util_true:.1f}%" in text


def test_bound_warning_names_runs_memory_did_not_bind():
    r = Result("jenga", 4, 0, 1.0, 4.0, 8.0, 0, 0, 0, 0.0, 9, max_batch=4, saturated_steps=0)
    s = Result("max-page", 4, 0, 1.0, 4.0, 8.0, 0, 0, 0, 0.0, 9, max_batch=2, saturated_steps=3)
    assert bound_warning([r, s], max_num_seqs=4) == ("warning: jenga reached max_num_seqs=4; jenga never waited "
                                                     "for memory: memory did not bound the batch, so the "
                                                     "allocators are not compared")
    assert bound_warning([s], max_num_seqs=4) is None


def test_plot_batches_writes_a_png(tmp_path):
    rs = [Result(a, 2, 0, 1.0, 2.0, 4.0, 0, 0, 0, 0.0, 3, batch_series=b) for a, b in
          (("jenga", (2, 2, 1)), ("max-page", (1, 1, 1)))]
    plot_batches(rs, str(tmp_path / "b.png"), "t")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_transformers_reference_uses_the_same_kv_bytes(gemma):
    import transformers as tf
    cfg = tf.Gemma2Config(num_hidden_layers=4, num_key_value_heads=2, head_dim=16, hidden_size=64,
                          num_attention_heads=4)
    # a block: 16 tokens x 4 layers x 256 B = 16 KiB
    cb = hf_cache_config(cfg, 200 * 1024, 32)
    assert (cb.num_blocks, cb.page_size, cb.max_batch_tokens) == (12, 16, 32)
    dt, tokens = run_hf(gemma, Workload(num_requests=3, prompt_len=40, output_len=5, images=0), 200 * 1024, 32)
    assert tokens == 15 and dt > 0


def test_cli_defaults_bind_memory_on_the_builtin_model():
    import argparse
    p = argparse.ArgumentParser()
    add_args(p)
    a = p.parse_args([])
    assert (a.model, a.kv_bytes, a.num_requests, a.prompt_len, a.output_len, a.max_num_batched_tokens,
            a.threads) == ("builtin:gemma2-small", DEFAULT_KV_BYTES, 24, 384, 32, 512, 1)
    a = p.parse_args(["--kv-cache-memory", "8MiB", "--num-prompts", "5", "--plot", "x.png"])
    assert (a.kv_bytes, a.num_requests, a.plot) == (8 * 2**20, 5, "x.png")


def test_vs_transformers_runs_three_engines_interleaved(gemma):
    from jenga.bench.vs_transformers import compare, report
    w = Workload(num_requests=3, prompt_len=20, output_len=3, prompt_len_min=9)
    prompts = make_prompts(w, 128, None)
    assert sorted(len(p) for p in prompts) != [20] * 3 and all(9 <= len(p) <= 20 for p in prompts)
    timings, agree = compare(gemma, prompts, 3, 1 << 20, 2, 64, cpu_threads=1)
    assert [t.engine for t in timings] == ["jenga", "transformers generate", "transformers generate_batch"]
    assert all(t.tokens == 9 and len(t.runs) == 2 and min(t.runs) <= t.seconds <= max(t.runs) for t in timings)
    assert agree == 3                     # greedy tokens equal to transformers' on every request
    text = report("tiny", 3, (9, 20), 3, 1, timings, agree)
    assert "| jenga |" in text and "1.00x |" in text and "3 of 3 requests" in text
