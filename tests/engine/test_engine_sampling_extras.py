"""The engine with vLLM's extra sampling parameters, on a tiny random-weight
llama compared with transformers: logprobs equal its log-softmax, a
repetition penalty gives its greedy tokens (the prompt counts, even when
prefilled in chunks), special tokens show or not."""

import math

import pytest
import torch
from engine_helpers import tiny_checkpoint

from jenga.engine.config import EngineConfig
from jenga.engine.llm_engine import LLMEngine
from jenga.sched.params import SamplingParams

PROMPT = [(7 * i + 3) % 250 for i in range(41)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    return path, tiny_checkpoint("llama", path)


def engine(path) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(path), device="cpu", cpu_threads=1, page_tokens=4,
                                  kv_cache_memory=1 << 20, max_num_batched_tokens=16))


def finish(eng: LLMEngine, rid: str, prompt, params):
    eng.add_request(rid, prompt, params)
    while eng.has_unfinished_requests():
        for out in eng.step():
            if out.finished:
                return out


def test_logprobs_equal_transformers_log_softmax(tiny):
    path, model = tiny
    out = finish(engine(path), "a", PROMPT, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=3))
    c = out.outputs[0]
    with torch.no_grad():
        ids = torch.tensor([PROMPT + list(c.token_ids)])
        ref = model(ids, position_ids=torch.arange(ids.shape[1]).unsqueeze(0)).logits[0].log_softmax(-1)
    assert len(c.logprobs) == len(c.token_ids) == 6
    for i, (tok, lp) in enumerate(zip(c.token_ids, c.logprobs)):
        row = ref[len(PROMPT) - 1 + i]
        assert next(iter(lp)) == tok and lp[tok].rank == 1            # greedy: the sampled token is the top
        assert set(lp) == set(row.topk(3).indices.tolist())
        for t, entry in lp.items():
            assert abs(entry.logprob - float(row[t])) < 1e-4
        assert lp[tok].decoded_token is not None
    assert math.isclose(c.cumulative_logprob, sum(lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)))
    assert out.prompt_logprobs is None


def test_repetition_penalty_matches_transformers(tiny):
    path, model = tiny
    ids = torch.tensor([PROMPT])
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                         do_sample=False, repetition_penalty=1.8, eos_token_id=None, pad_token_id=0)[0, 41:].tolist()
    eng = engine(path)
    out = finish(eng, "a", PROMPT, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True,
                                                  repetition_penalty=1.8))
    assert list(out.outputs[0].token_ids) == ref
    plain = finish(eng, "b", PROMPT, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    assert list(plain.outputs[0].token_ids) != ref       # the penalty changed something
    assert eng.sampler.num_tracked == 0                   # finished requests leave nothing behind


def test_skip_special_tokens_and_bias_validation(tiny):
    path, _ = tiny
    eng = engine(path)
    forced = dict(max_tokens=2, temperature=0.0, ignore_eos=True, logit_bias={257: 100.0})   # 257 is </s>
    shown = finish(eng, "s", PROMPT[:5], SamplingParams(**forced, skip_special_tokens=False))
    hidden = finish(eng, "h", PROMPT[:5], SamplingParams(**forced))
    assert list(shown.outputs[0].token_ids) == [257, 257]
    assert shown.outputs[0].text == "</s></s>" and hidden.outputs[0].text == ""
    with pytest.raises(ValueError, match="logit_bias"):
        eng.add_request("x", PROMPT[:5], SamplingParams(logit_bias={258: 1.0}))
    assert not eng.has_unfinished_requests()
