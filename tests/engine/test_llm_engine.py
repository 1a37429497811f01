"""LLMEngine end to end on tiny random-weight models: scheduler + memory
manager + runner + sampler, compared with transformers token for token."""

import pytest
import torch
from engine_helpers import reference_greedy, tiny_checkpoint

from jenga.engine.config import EngineConfig
from jenga.engine.llm import LLM
from jenga.engine.llm_engine import LLMEngine
from jenga.sched.params import SamplingParams

GREEDY = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
PROMPTS = [[(7 * i + 3) % 250 for i in range(n)] for n in (5, 23, 41)]


@pytest.fixture(scope="module", params=["llama", "gemma2"])
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model = tiny_checkpoint(request.param, path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a tiny model gains nothing from more
    refs = [reference_greedy(model, p, GREEDY.max_tokens) for p in PROMPTS]
    torch.set_num_threads(threads)
    return path, refs


def engine(path, **kw) -> LLMEngine:
    cfg = dict(model=str(path), device="cpu", cpu_threads=1, page_tokens=4, kv_cache_memory=1 << 20, max_num_batched_tokens=16)
    cfg.update(kw)
    return LLMEngine(EngineConfig(**cfg))


def run(eng: LLMEngine, prompts, params=GREEDY, prefix="r"):
    for i, p in enumerate(prompts):
        eng.add_request(f"{prefix}{i}", p, params)
    final, streamed = {}, {}
    while eng.has_unfinished_requests():
        for out in eng.step():
            streamed.setdefault(out.request_id, []).extend(out.delta.token_ids)
            if out.finished:
                final[out.request_id] = out
    for rid, out in final.items():
        assert list(out.outputs[0].token_ids) == streamed[rid]
    return [final[f"{prefix}{i}"] for i in range(len(prompts))]


@pytest.mark.parametrize("allocator", ["jenga", "max-page", "static", "uniform"])
def test_batched_chunked_greedy_matches_transformers(tiny, allocator):
    path, refs = tiny
    eng = engine(path, allocator=allocator)
    outs = run(eng, PROMPTS)
    assert [list(o.outputs[0].token_ids) for o in outs] == refs
    assert all(o.outputs[0].finish_reason == "length" for o in outs)
    eng.manager.check_invariants()
    assert eng.stats().kv_used_bytes == 0 and not eng.has_unfinished_requests()


def test_prefix_hit_and_preemption_keep_outputs_exact(tiny):
    path, refs = tiny
    eng = engine(path)
    run(eng, [PROMPTS[2]], prefix="warm")
    out = run(eng, [PROMPTS[2]], prefix="again")[0]
    assert out.num_cached_tokens >= 36 and list(out.outputs[0].token_ids) == refs[2]
    # six requests in a pool that holds about three: the decodes' growth runs
    # out of memory and preempts (long prompts wait until all of them fits)
    small = engine(path, kv_cache_memory=64 * 1024, enable_prefix_caching=False)
    outs = run(small, PROMPTS * 2)
    assert small.scheduler.stats.num_preemptions > 0
    assert [list(o.outputs[0].token_ids) for o in outs] == refs * 2


def test_seeded_sampling_ignores_batch_company(tiny):
    path, _ = tiny
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=5, ignore_eos=True)
    alone = run(engine(path), [PROMPTS[1]], params)[0].outputs[0].token_ids
    eng = engine(path, seed=3)
    others = SamplingParams(max_tokens=15, temperature=1.0, ignore_eos=True)
    eng.add_request("x", PROMPTS[0], others)
    eng.add_request("y", PROMPTS[2], others)
    assert run(eng, [PROMPTS[1]], params)[0].outputs[0].token_ids == alone
    assert len(set(alone)) > 3


def test_add_request_validation(tiny):
    path, _ = tiny
    eng = engine(path, max_model_len=64)
    with pytest.raises(ValueError, match="non-empty"):
        eng.add_request("a", "", GREEDY)
    with pytest.raises(ValueError, match="at least one token"):
        eng.add_request("a", [], GREEDY)
    with pytest.raises(ValueError, match="max_model_len"):
        eng.add_request("a", [1] * 64, GREEDY)
    with pytest.raises(ValueError, match=r"\[0, 258\)"):
        eng.add_request("a", [1, 300], GREEDY)
    with pytest.raises(ValueError, match="params"):
        eng.add_request("a", [1, 2], {"max_tokens": 3})
    eng.add_request("a", "hello", GREEDY)
    with pytest.raises(ValueError, match="already in use"):
        eng.add_request("a", "hello", GREEDY)
    with pytest.raises(ValueError, match="max_model_len"):
        engine(path, max_model_len=10_000)


def test_abort_and_eos(tiny):
    path, refs = tiny
    eng = engine(path)
    eng.add_request("keep", PROMPTS[0], GREEDY)
    eng.add_request("drop", PROMPTS[1], GREEDY)
    eng.step()
    out = eng.abort("drop")
    assert out.finished and out.outputs[0].finish_reason == "abort"
    assert eng.abort("drop") is None and eng.abort("nope") is None
    rest = [o for _ in range(40) for o in eng.step()]
    assert [o.request_id for o in rest if o.finished] == ["keep"]
    eng.manager.check_invariants()
    # eos: stop on the first token of the reference continuation
    stop_eos = SamplingParams(max_tokens=20, temperature=0.0, stop_token_ids=(refs[1][3],))
    got = run(eng, [PROMPTS[1]], stop_eos, prefix="eos")[0].outputs[0]
    first = refs[1].index(refs[1][3])
    assert list(got.token_ids) == refs[1][:first + 1]
    assert (got.finish_reason, got.stop_reason) == ("stop", refs[1][3])


def test_llm_generate_keeps_input_order(tiny):
    path, refs = tiny
    llm = LLM(str(path), device="cpu", cpu_threads=1, page_tokens=4, kv_cache_memory=1 << 20)
    outs = llm.generate(list(reversed(PROMPTS)), GREEDY, use_tqdm=True)
    assert [list(o.outputs[0].token_ids) for o in outs] == list(reversed(refs))
    one = llm.generate(PROMPTS[0], [GREEDY])
    assert len(one) == 1 and list(one[0].outputs[0].token_ids) == refs[0]
    with pytest.raises(ValueError, match="sampling_params"):
        llm.generate(PROMPTS, [GREEDY])
    assert not llm.engine.has_unfinished_requests()
    assert torch.get_default_dtype() == torch.float32
