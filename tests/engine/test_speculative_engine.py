"""Speculative decoding end to end: a tiny random-weight Llama target and a
smaller Llama draft share one KV pool; greedy outputs must equal the
target's alone and transformers' generate, token for token, with chunked
prefill, prefix-cache hits and preemption, and the manager's invariants
must hold after every step."""

import shutil

import pytest
import torch
import transformers as tf
from engine_helpers import reference_greedy, tiny_checkpoint
from spec_helpers import random_draft, truncated_draft

from jenga.engine.config import EngineConfig
from jenga.engine.llm_engine import LLMEngine
from jenga.sched.params import SamplingParams

NEW = 24
GREEDY = SamplingParams(max_tokens=NEW, temperature=0.0, ignore_eos=True)
PROMPTS = [[(7 * i + 3) % 250 for i in range(n)] for n in (5, 23, 41)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(target, truncated draft, random draft, twin = a copy of the target,
    transformers' greedy outputs of the target)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    target = tmp_path_factory.mktemp("target")
    model = tiny_checkpoint("llama", target)
    draft = tmp_path_factory.mktemp("draft")
    truncated_draft(model, draft)
    rand = tmp_path_factory.mktemp("random")
    random_draft(rand)
    twin = tmp_path_factory.mktemp("twin") / "m"
    shutil.copytree(target, twin)
    refs = [reference_greedy(model, p, NEW) for p in PROMPTS]
    torch.set_num_threads(threads)
    return target, draft, rand, twin, refs


def engine(path, draft=None, k=0, **kw) -> LLMEngine:
    cfg = dict(model=str(path), device="cpu", cpu_threads=1, page_tokens=4, kv_cache_memory=1 << 20,
               max_num_batched_tokens=16, speculative_model=None if draft is None else str(draft),
               num_speculative_tokens=k)
    cfg.update(kw)
    return LLMEngine(EngineConfig(**cfg))


def run(eng: LLMEngine, prompts, params=GREEDY, prefix="r") -> list[list[int]]:
    """Drive the engine to completion, checking the manager after every step
    and that streamed deltas add up to the final token ids."""
    for i, p in enumerate(prompts):
        eng.add_request(f"{prefix}{i}", p, params)
    final, streamed = {}, {}
    while eng.has_unfinished_requests():
        for out in eng.step():
            streamed.setdefault(out.request_id, []).extend(out.delta.token_ids)
            if out.finished:
                final[out.request_id] = list(out.outputs[0].token_ids)
        eng.manager.check_invariants()
    assert all(final[r] == streamed[r] for r in final)
    return [final[f"{prefix}{i}"] for i in range(len(prompts))]


@pytest.mark.parametrize("k", [1, 3])
def test_greedy_output_equals_target_alone_and_transformers(pair, k):
    target, draft, _, _, refs = pair
    alone = run(engine(target), PROMPTS)
    eng = engine(target, draft, k)
    assert run(eng, PROMPTS) == alone == refs
    st = eng.stats()
    # a random 1-layer draft is right sometimes, not always
    assert 0 < st.accepted_tokens < st.draft_tokens
    assert st.acceptance_rate == st.accepted_tokens / st.draft_tokens
    assert st.num_steps < engine_steps(target, PROMPTS) or st.accepted_tokens < 3
    assert st.kv_used_bytes == 0 and not eng.has_unfinished_requests()


def test_a_draft_that_is_always_wrong_changes_nothing(pair):
    target, _, rand, _, refs = pair
    eng = engine(target, rand, 3)
    assert run(eng, PROMPTS) == refs
    st = eng.stats()
    assert st.draft_tokens > 60 and st.accepted_tokens <= 2


def engine_steps(path, prompts) -> int:
    eng = engine(path)
    run(eng, prompts)
    return eng.stats().num_steps


def test_draft_layers_get_their_own_groups_in_one_plan(pair):
    target, draft, _, _, _ = pair
    eng = engine(target, draft, 2)
    tags = {g.spec.model: g.layers for g in eng.plan.groups}
    assert tags == {"main": (0, 1), "draft": (2,)}
    assert eng.executor.draft.layer_offset == 2
    assert eng.scheduler.config.num_speculative_tokens == 2


def test_a_draft_equal_to_the_target_is_always_accepted(pair):
    target, _, _, twin, refs = pair
    eng = engine(target, twin, 3)
    assert run(eng, PROMPTS) == refs
    st = eng.stats()
    # per request: 1 token from the prefill, 5 steps of 3 drafts + bonus (21
    # tokens), then max_tokens leaves room for 2 drafts + bonus (24)
    assert st.draft_tokens == st.accepted_tokens == 3 * (5 * 3 + 2)
    assert st.num_steps < engine_steps(target, PROMPTS) / 2


def test_prefix_cache_hits_keep_outputs_exact(pair):
    target, draft, _, _, refs = pair
    eng = engine(target, draft, 3)
    assert run(eng, [PROMPTS[2]], prefix="warm") == [refs[2]]
    hits_before = eng.stats().hit_tokens
    assert run(eng, [PROMPTS[2]], prefix="again") == [refs[2]]
    # the hit needs the draft's pages too: every group must hold the prefix
    assert eng.stats().hit_tokens - hits_before >= 36


def test_preemption_keeps_outputs_exact(pair):
    target, draft, _, _, refs = pair
    eng = engine(target, draft, 3, kv_cache_memory=60 * 1024, enable_prefix_caching=False)
    assert run(eng, PROMPTS) == refs
    st = eng.stats()
    assert st.num_preemptions > 0 and st.accepted_tokens > 0


def test_seeded_sampling_gives_the_same_tokens_with_speculation(pair):
    """Verification draws one sample per output token from the request's
    generator (rejection sampling against a greedy draft), so a seeded
    request is reproduced exactly."""
    target, draft, _, twin, _ = pair
    params = SamplingParams(max_tokens=16, temperature=0.8, top_k=40, seed=11, ignore_eos=True)
    alone = run(engine(target), PROMPTS, params)
    assert len(set(alone[0])) > 3
    for d in (draft, twin):
        eng = engine(target, d, 3)
        assert run(eng, PROMPTS, params) == alone
        assert eng.stats().accepted_tokens > 0


def test_bad_speculative_configs(pair, tmp_path):
    target, draft, _, _, _ = pair
    with pytest.raises(ValueError, match="needs a speculative_model"):
        EngineConfig(model=str(target), num_speculative_tokens=2)
    with pytest.raises(ValueError, match="num_speculative_tokens must be >= 1"):
        EngineConfig(model=str(target), speculative_model=str(draft))
    with pytest.raises(ValueError, match=r"num_speculative_tokens must be an integer in \[0, 16\]"):
        EngineConfig(model=str(target), speculative_model=str(draft), num_speculative_tokens=17)
    other = tmp_path / "other"
    cfg = tf.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    tf.LlamaForCausalLM(cfg).save_pretrained(other)
    with pytest.raises(ValueError, match="has vocab_size 300, the target 258"):
        engine(target, other, 2)
