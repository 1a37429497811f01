"""ModelRunner driven by the real Scheduler and MemoryManager (no engine):
the page tables they hand over (prefix-cache hits, released window pages,
chunked prefill, preemption in a small pool) must give exactly the tokens
transformers' generate gives."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from jenga.engine.runner import ModelRunner
from jenga.memory.manager import MemoryManager
from jenga.memory.plan import Group, MemoryPlan
from jenga.memory.spec import LayerSpec
from jenga.model.kv_pool import KVPool
from jenga.model.loader import load_model
from jenga.sched.config import SchedulerConfig
from jenga.sched.params import SamplingParams
from jenga.sched.request import Request
from jenga.sched.scheduler import Scheduler
from jenga.sched.step import StepResult

NEW = 20


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)       # tiny matmuls: extra threads only spin
    path = tmp_path_factory.mktemp("ministral")
    cfg = tf.MinistralConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=6,
                             max_position_embeddings=128, layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(1)
    hf = tf.MinistralForCausalLM(cfg).eval()
    hf.save_pretrained(path)
    yield hf, load_model(path)
    torch.set_num_threads(n)


def _plan(num_large: int) -> MemoryPlan:
    # sliding and full layer: 4 tokens x 128 B = 512 B small pages, 2 per 1 KiB large page
    slide = LayerSpec("sliding", "float32", 2, 8, window=6)
    full = LayerSpec("full", "float32", 2, 8)
    return MemoryPlan((Group(0, slide, (0,), 4, 512, 2), Group(1, full, (1,), 4, 512, 2)), 1024, num_large,
                      base_page_tokens=4)


def _hf_greedy(hf, prompt):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def _serve(model, plan, prompts, budget):
    mgr = MemoryManager(plan, enable_prefix_caching=True)
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=8), mgr, max_model_len=128)
    runner = ModelRunner(model, KVPool(plan), plan)
    params = SamplingParams(max_tokens=NEW, temperature=0.0, ignore_eos=True)
    for rid, prompt in prompts.items():
        sched.add_request(Request(rid, prompt, params))
    outs = {rid: [] for rid in prompts}
    cached = 0
    for step in range(400):
        if not sched.has_unfinished():
            break
        plan_ = sched.schedule()
        out = runner.forward(plan_)
        sampled = {r: (int(row.argmax()),) for r, row in zip(out.req_ids, out.logits)}
        for u in sched.update(plan_, StepResult(sampled), float(step)):
            outs[u.req_id].extend(u.new_token_ids)
            cached = max(cached, u.num_cached_tokens)
        mgr.check_invariants()
    return outs, sched.stats, cached


SYSTEM = [7, 3, 99, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38]     # a shared 16-token prefix
PROMPTS = {"a": SYSTEM + [1, 2, 3], "b": SYSTEM + [50, 60, 70, 80, 90], "c": [5] * 9, "d": SYSTEM + [4]}


def test_scheduler_plans_give_transformers_tokens(models):
    hf, model = models
    outs, stats, cached = _serve(model, _plan(64), PROMPTS, budget=12)
    assert cached > 0, "later requests must hit the shared prefix in the cache"
    for rid, prompt in PROMPTS.items():
        assert outs[rid] == _hf_greedy(hf, prompt), rid


def test_preemption_in_a_small_pool_recomputes_exactly(models):
    hf, model = models
    outs, stats, _ = _serve(model, _plan(10), PROMPTS, budget=12)
    assert stats.num_preemptions > 0
    for rid, prompt in PROMPTS.items():
        assert outs[rid] == _hf_greedy(hf, prompt), rid


def test_compaction_in_a_small_pool_keeps_the_tokens_exact(models):
    hf, model = models
    prompts = {"a": [6, 8, 18], "b": [57, 112, 87, 79, 29, 85, 88, 14, 111, 97],
               "c": [55, 119, 83, 82, 37, 114, 88, 44, 64, 88, 25, 21, 48, 72, 108, 46, 92, 57, 51],
               "d": [85, 41, 109, 60, 9, 19, 29, 97, 15, 97, 20, 51, 60, 91, 70, 27, 115],
               "e": [91, 6, 3, 52, 27, 12, 110, 53, 75, 73, 112, 102, 53, 70], "f": [82, 1, 86, 18, 68, 83, 117, 63, 40]}
    outs, stats, _ = _serve(model, _plan(10), prompts, budget=16)
    # freed slots strand in both groups' large pages: an allocation that
    # succeeds by compaction moves pages (copied before the forward); a
    # failed one moves none (it would leave useless copies behind)
    assert stats.num_preemptions > 0 and stats.num_pages_moved > 0
    for rid, prompt in prompts.items():
        assert outs[rid] == _hf_greedy(hf, prompt), rid
