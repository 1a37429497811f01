"""Parallel sampling (n > 1): n children share the prompt's pages through
the prefix cache, seeded children equal seeded single requests token for
token, and preempting one child frees only its own pages."""

import pytest
from engine_helpers import reference_greedy, tiny_checkpoint

from jenga.engine.config import EngineConfig
from jenga.engine.llm import LLM
from jenga.engine.llm_engine import LLMEngine
from jenga.engine.parallel_sampling import child_id
from jenga.sched.params import SamplingParams

PROMPT = [(7 * i + 3) % 250 for i in range(40)]   # 2 full pages of 16 tokens + 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    return path, tiny_checkpoint("llama", path)


def test_seeded_n_equals_seeded_single_requests(folder):
    path, _ = folder
    llm = LLM(str(path), kv_cache_memory=1 << 20, cpu_threads=1)
    p = SamplingParams(max_tokens=6, temperature=1.0, seed=11, ignore_eos=True)
    [out] = llm.generate([PROMPT], SamplingParams(**{**p.__dict__, "n": 3}))
    assert [c.index for c in out.outputs] == [0, 1, 2] and out.finished
    singles = llm.generate([PROMPT] * 3, [SamplingParams(**{**p.__dict__, "seed": 11 + i}) for i in range(3)])
    assert [c.token_ids for c in out.outputs] == [s.outputs[0].token_ids for s in singles]
    assert len({c.token_ids for c in out.outputs}) > 1          # different seeds, different samples


def test_children_share_the_prompt_pages_by_reference(folder):
    path, model = folder
    e = LLMEngine(EngineConfig(model=str(path), kv_cache_memory=1 << 20, cpu_threads=1))
    e.add_request("p", PROMPT, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True, n=4))
    kids = [child_id("p", i) for i in range(4)]
    e.step()          # child 0 prefills the prompt; its siblings wait for it (shared-prefill wait)
    assert [len(e.scheduler.requests[k].output_token_ids) for k in kids] == [1, 0, 0, 0]
    e.step()          # the siblings hit its two full pages and compute the last 8 tokens
    tables = [e.manager.page_tables(k)[0] for k in kids]       # group 0 holds both layers
    shared = tables[0][:2]
    assert all(t[:2] == shared for t in tables)
    assert len({t[2] for t in tables}) == 4                    # each child's own partial page
    pool = e.manager.pool
    assert [pool.ref[0][pg] for pg in shared] == [4, 4]
    assert [e.scheduler.requests[k].num_cached for k in kids] == [0, 32, 32, 32]
    # preempting one child releases only its own page and its references
    victim = e.scheduler.requests[kids[3]]
    own = tables[3][2]
    e.scheduler._preempt(victim)
    e.manager.check_invariants()
    assert [pool.ref[0][pg] for pg in shared] == [3, 3] and pool.ref[0][own] == 0
    assert all(e.manager.page_tables(k)[0][:3] == tables[i] [:3] for i, k in enumerate(kids[:3]))
    final = {}
    while e.has_unfinished_requests():
        for out in e.step():
            if out.finished:
                final[out.request_id] = out
    want = tuple(reference_greedy(model, PROMPT, 4))
    assert [c.token_ids for c in final["p"].outputs] == [want] * 4
    assert e.manager.usage().used_bytes == 0
    e.manager.check_invariants()


def test_a_parent_is_one_request_to_abort_and_count(folder):
    path, _ = folder
    e = LLMEngine(EngineConfig(model=str(path), kv_cache_memory=1 << 20, cpu_threads=1))
    e.add_request("p", PROMPT, SamplingParams(max_tokens=4, n=3))
    assert e.get_num_unfinished_requests() == 1
    with pytest.raises(ValueError, match="already in use"):
        e.add_request("p", PROMPT, SamplingParams(max_tokens=4))
    e.step()
    out = e.abort("p")
    assert out.request_id == "p" and out.finished and [c.finish_reason for c in out.outputs] == ["abort"] * 3
    assert not e.has_unfinished_requests() and e.get_num_unfinished_requests() == 0
    with pytest.raises(ValueError, match="n must be an integer"):
        SamplingParams(n=0)


def test_sliding_window_children_share_the_window_pages(tmp_path):
    """Gemma-2 (window 8 on every other layer): the siblings hit the prompt's
    two full pages in both groups and match transformers."""
    model = tiny_checkpoint("gemma2", tmp_path)
    e = LLMEngine(EngineConfig(model=str(tmp_path), kv_cache_memory=1 << 20, cpu_threads=1))
    e.add_request("p", PROMPT, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True, n=3))
    e.step()
    e.step()
    kids = [child_id("p", i) for i in range(3)]
    assert [g.spec.describe() for g in e.plan.groups] == ["sliding(window=8)", "full"]
    sliding = [e.manager.page_tables(k)[0] for k in kids]
    full = [e.manager.page_tables(k)[1] for k in kids]
    # child 0 computed the prompt and released its out-of-window pages but
    # the window page before the prefix its siblings share (tokens 16-31,
    # sched/prefill_wait.py SharedPrefixes); the siblings hit at 32 and hold
    # that page by reference too, plus a partial page each
    assert sliding == [(-1, 1, 2), (-1, 1, 6), (-1, 1, 8)]
    assert full == [(3, 4, 5), (3, 4, 7), (3, 4, 9)]
    ref = e.manager.pool.ref
    assert (ref[0][1], ref[1][3], ref[1][4]) == (3, 3, 3)
    final = None
    while e.has_unfinished_requests():
        for out in e.step():
            final = out if out.finished else final
    assert [c.token_ids for c in final.outputs] == [tuple(reference_greedy(model, PROMPT, 4))] * 3
    assert e.stats().hit_tokens == 2 * 32
