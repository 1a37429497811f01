"""Property tests: the sampler never returns junk, whatever the parameters
(temperatures down to 1e-45, top_p down to 1e-300, top_k, min_p, penalties,
bias) and whatever the logits (huge, tiny, NaN, +-inf), as long as a row has
one finite logit.  Junk would be a NaN-, -inf- or out-of-range token, or a
random pick where the parameters leave only the top token."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jenga.engine.sampler import Sampler
from jenga.sched.params import SamplingParams
from jenga.sched.step import SeqStep

EXTREME = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0.0, 1e38, -1e38, 3.4e38, -3.4e38, 1e-38, 88.0, -88.0]))
ROW = st.lists(EXTREME, min_size=2, max_size=40).filter(lambda r: any(math.isfinite(x) or x == math.inf for x in r))

PARAMS = st.builds(
    SamplingParams,
    temperature=st.one_of(st.sampled_from([0.0, 1e-45, 1e-38, 1e-6, 1e-5, 1e-3, 1.0, 100.0]),
                          st.floats(0.0, 100.0)),
    top_p=st.one_of(st.sampled_from([1e-300, 1e-9, 0.5, 1.0]), st.floats(1e-300, 1.0, exclude_min=False)),
    top_k=st.sampled_from([-1, 0, 1, 2, 5, 100]),
    min_p=st.one_of(st.sampled_from([0.0, 1e-30, 0.5, 1.0]), st.floats(0.0, 1.0)),
    presence_penalty=st.floats(-2.0, 2.0), frequency_penalty=st.floats(-2.0, 2.0),
    repetition_penalty=st.sampled_from([1.0, 1e-3, 1.2, 100.0]),
    logit_bias=st.one_of(st.none(), st.dictionaries(st.integers(0, 39), st.floats(-100.0, 100.0), max_size=3)),
    seed=st.one_of(st.none(), st.integers(0, 2**32)),
    logprobs=st.one_of(st.none(), st.integers(0, 20)),
)


def _sane(row: list[float]) -> torch.Tensor:
    return torch.nan_to_num(torch.tensor(row, dtype=torch.float32), nan=-math.inf,
                            posinf=torch.finfo(torch.float32).max)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(ROW, min_size=1, max_size=4), params=st.lists(PARAMS, min_size=4, max_size=4),
       outputs=st.lists(st.integers(0, 39), max_size=6))
def test_sampler_never_returns_junk(rows, params, outputs):
    vocab = min(len(r) for r in rows)
    logits = torch.stack([torch.tensor(r[:vocab], dtype=torch.float32) for r in rows])
    if not bool(_sane_rows(logits)):
        return
    seqs = [SeqStep(f"r{i}", (0, 0, *outputs), 0, (), True, params[i], 3) for i in range(len(rows))]
    sampler = Sampler(seed=1)
    for i in range(len(rows)):
        sampler.add_prompt(f"r{i}", (0, 0, 0))
    tokens, lps = sampler.sample_with_logprobs(logits, seqs)
    for i, (tok, p) in enumerate(zip(tokens, params)):
        sane = _sane(rows[i][:vocab])
        assert 0 <= tok < vocab
        assert math.isfinite(float(sane[tok])), (tok, rows[i])       # never a NaN or -inf token
        if p.logprobs is not None:
            assert lps[i].token_id == tok and not math.isnan(lps[i].logprob) and lps[i].rank >= 1
            assert len(lps[i].top) == min(p.logprobs, vocab)
        else:
            assert lps[i] is None


def _sane_rows(logits: torch.Tensor) -> bool:
    return bool((~torch.isnan(logits) & (logits > -math.inf)).any(dim=1).all())


@settings(max_examples=150, deadline=None)
@given(row=ROW, temperature=st.one_of(st.sampled_from([1e-45, 1e-38, 1e-5, 1.0, 100.0]), st.floats(0.0, 100.0)),
       narrow=st.sampled_from(["greedy", "top_k", "top_p", "min_p"]), seed=st.integers(0, 2**32))
def test_parameters_that_leave_one_token_pick_the_top_token(row, temperature, narrow, seed):
    kw = {"greedy": {"temperature": 0.0}, "top_k": {"top_k": 1}, "top_p": {"top_p": 1e-300},
          "min_p": {"min_p": 1.0}}[narrow]
    params = SamplingParams(**{"temperature": temperature, "seed": seed, **kw})
    logits = torch.tensor([row], dtype=torch.float32)
    if not _sane_rows(logits):
        return
    sane = _sane(row)
    tok = Sampler().sample(logits, [SeqStep("a", (0,), 0, (), True, params, 1)])[0]
    assert float(sane[tok]) == float(sane.max())


@settings(max_examples=80, deadline=None)
@given(row=st.lists(st.floats(-50, 50), min_size=3, max_size=40), k=st.integers(1, 5),
       temperature=st.floats(1e-5, 100.0), seed=st.integers(0, 2**32))
def test_top_k_draws_from_the_k_best(row, k, temperature, seed):
    params = SamplingParams(temperature=temperature, top_k=k, seed=seed)
    t = torch.tensor(row, dtype=torch.float32)
    tok = Sampler().sample(t.unsqueeze(0), [SeqStep("a", (0,), 0, (), True, params, 1)])[0]
    assert int((t > t[tok]).sum()) < k
