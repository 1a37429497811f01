"""Sampler: vLLM's extra parameters (penalties, min_p, logit_bias, logprobs)
and the rules that keep extreme values from producing junk."""

import math

import pytest
import torch

from jenga.engine.sampler import Sampler
from jenga.sched.params import SamplingParams
from jenga.sched.step import SeqStep

GREEDY = {"temperature": 0.0}


def step(req_id, params, tokens, start, prompt_len=3, num_spec=0):
    return SeqStep(req_id, tuple(tokens), start, (), True, params, prompt_len, num_spec=num_spec)


def test_temperatures_below_1e5_are_greedy():
    logits = torch.randn(3, 40, generator=torch.Generator().manual_seed(0))
    for t in (1e-45, 1e-38, 9.9e-6):
        p = SamplingParams(temperature=t, top_p=1e-300 if t < 1e-40 else 1.0)
        assert p.greedy
        assert Sampler().sample(logits, [step(f"r{i}", p, (1,), 3) for i in range(3)]) == \
            logits.argmax(dim=-1).tolist()
    assert not SamplingParams(temperature=1e-5).greedy


def test_nan_and_inf_logits():
    logits = torch.tensor([[float("nan"), 1.0, 2.0, float("nan")],
                           [0.0, float("inf"), 5.0, float("-inf")]])
    s = Sampler()
    for params in (SamplingParams(**GREEDY), SamplingParams(temperature=1.0), SamplingParams(temperature=1e-5)):
        for _ in range(10):   # NaN is never drawn; an infinite logit always is
            a, b = s.sample(logits, [step("a", params, (1,), 3), step("b", params, (1,), 3)])
            assert a in ((2,) if params.greedy else (1, 2)) and b == 1
    with pytest.raises(ValueError, match="no finite"):
        s.sample(torch.full((1, 4), float("nan")), [step("a", SamplingParams(), (1,), 3)])


def test_logit_bias_moves_the_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0, 0.5]])
    p = SamplingParams(logit_bias={"2": 5.0}, **GREEDY)   # JSON-style string key
    assert dict(p.logit_bias) == {2: 5.0}
    assert Sampler().sample(logits, [step("a", p, (1,), 3)]) == [2]
    banned = SamplingParams(logit_bias={1: -100}, **GREEDY)
    assert Sampler().sample(logits, [step("a", banned, (1,), 3)]) == [2]


def test_min_p_keeps_tokens_above_a_fraction_of_the_top():
    # probabilities 0.5, 0.3, 0.15, 0.05: min_p 0.5 keeps 0.5 and 0.3 (>= 0.25)
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).expand(3000, -1).clone()
    p = SamplingParams(min_p=0.5, seed=None)
    toks = Sampler(seed=3).sample(logits, [step(f"r{i}", p, (1,), 3) for i in range(3000)])
    counts = torch.bincount(torch.tensor(toks), minlength=4).tolist()
    assert counts[2] == counts[3] == 0
    assert abs(counts[0] / 3000 - 0.5 / 0.8) < 0.03
    one = SamplingParams(min_p=1.0)
    assert set(Sampler().sample(logits[:50], [step(f"r{i}", one, (1,), 3) for i in range(50)])) == {0}


def test_presence_frequency_and_repetition_penalties():
    # prompt [5], outputs so far [1, 1]: the seq feeds the last output at position 4
    base = torch.tensor([[0.0, 3.0, 2.5, 1.0, -1.0, 2.9]])
    s = Sampler()
    freq = SamplingParams(frequency_penalty=0.4, **GREEDY)      # token 1: 3.0 - 0.8 = 2.2 < 2.5
    s.sample(base, [step("f", freq, (7, 7, 5), 0)])              # prompt-end sample: no outputs yet
    s.sample(base, [step("f", freq, (1,), 3)])
    assert s.sample(base, [step("f", freq, (1,), 4)]) == [5]
    pres = SamplingParams(presence_penalty=0.2, **GREEDY)        # once, not per occurrence: 2.8 < 2.9
    s.sample(base, [step("p", pres, (7, 7, 5, 1), 0, prompt_len=4)])
    assert s.sample(base, [step("p", pres, (1,), 4, prompt_len=4)]) == [5]
    rep = SamplingParams(repetition_penalty=2.0, **GREEDY)       # prompt holds 5 and 1: 2.9/2, 3.0/2 < 2.5
    s.add_prompt("r", (5, 1, 0))
    assert s.sample(base, [step("r", rep, (0,), 2)]) == [2]
    neg = torch.tensor([[-1.0, -1.2, -3.0]])                     # negative logits are multiplied
    s.add_prompt("n", (0,))
    assert s.sample(neg, [step("n", rep, (0,), 0, prompt_len=1)]) == [1]
    assert s.num_tracked == 4
    s.drop(["f", "p", "r", "n"])
    assert s.num_tracked == 0


def test_penalty_history_follows_positions_through_drafts_and_recompute():
    s = Sampler()
    p = SamplingParams(frequency_penalty=1.0, **GREEDY)
    logits = torch.zeros(1, 10)
    s.sample(logits, [step("a", p, (0, 0, 0), 0)])
    s.sample(logits, [step("a", p, (4,), 3)])
    # a verify step: last real token 6 at position 4, drafts 7, 8; at verify position 1 one draft counts
    s.sample(logits, [step("a", p, (6, 7, 8), 4, num_spec=1)])
    assert s._outputs["a"] == [4, 6, 7, 8]
    # drafts rejected: the next step re-feeds position 5 with another token
    s.sample(logits, [step("a", p, (9,), 5)])
    assert s._outputs["a"] == [4, 6, 9]
    # recompute after preemption: a last chunk reaching back into the prompt rewrites them all
    s.sample(logits, [step("a", p, (0, 4, 6, 9), 2)])
    assert s._outputs["a"] == [4, 6, 9]
    with pytest.raises(ValueError, match="missed"):
        s.sample(logits, [step("b", p, (1,), 7)])


def test_logprobs_are_the_models_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 5.0]])
    p = SamplingParams(logprobs=2, temperature=0.5, seed=1)
    q = SamplingParams(**GREEDY)
    toks, lps = Sampler().sample_with_logprobs(logits, [step("a", p, (1,), 3), step("b", q, (1,), 3)])
    assert lps[1] is None
    lp = lps[0]
    expect = torch.log_softmax(logits[0], dim=-1)
    assert lp.token_id == toks[0]
    assert math.isclose(lp.logprob, float(expect[toks[0]]), rel_tol=1e-6)
    assert lp.rank == 1 + int((expect > expect[toks[0]]).sum())
    assert [t for t, _ in lp.top] == [0, 1]
    assert math.isclose(lp.top[0][1], float(expect[0]), rel_tol=1e-6)
    zero = Sampler().sample_with_logprobs(logits[:1], [step("a", SamplingParams(logprobs=0), (1,), 3)])[1][0]
    assert zero.top == ()


@pytest.mark.parametrize("kw, field", [
    ({"min_p": 1.5}, "min_p"), ({"presence_penalty": 3}, "presence_penalty"),
    ({"frequency_penalty": float("nan")}, "frequency_penalty"), ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"logit_bias": {1: 101}}, "logit_bias"), ({"logit_bias": {-1: 1}}, "logit_bias"),
    ({"logit_bias": [1]}, "logit_bias"), ({"logprobs": 21}, "logprobs"), ({"logprobs": True}, "logprobs"),
    ({"prompt_logprobs": 1}, "prompt_logprobs"), ({"n": 0}, "n must"), ({"best_of": 2}, "best_of"),
    ({"skip_special_tokens": "no"}, "skip_special_tokens"), ({"temperature": float("inf")}, "temperature"),
    ({"top_p": float("nan")}, "top_p"),
])
def test_bad_extra_values_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kw)
