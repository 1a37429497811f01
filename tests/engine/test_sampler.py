"""Sampler: greedy, temperature, top-k/top-p, per-request seeds, min_tokens."""

import math

import pytest
import torch

from jenga.engine.sampler import Sampler
from jenga.sched.params import SamplingParams
from jenga.sched.step import SeqStep

EOS = 3


def seq(req_id: str, params: SamplingParams, generated: int = 0, prompt_len: int = 4) -> SeqStep:
    """A decode SeqStep whose request has `generated` output tokens so far."""
    end = prompt_len + generated
    return SeqStep(req_id, (1,), end - 1, (), True, params, prompt_len)


def rand_logits(n: int, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, vocab, generator=torch.Generator().manual_seed(seed)) * 2


def test_greedy_is_argmax():
    logits = rand_logits(6)
    seqs = [seq(f"r{i}", SamplingParams(temperature=0.0)) for i in range(6)]
    assert Sampler().sample(logits, seqs) == logits.argmax(dim=-1).tolist()


def test_top_k_1_and_tiny_top_p_are_greedy():
    logits = rand_logits(8, seed=1)
    expected = logits.argmax(dim=-1).tolist()
    s = Sampler(seed=5)
    for params in (SamplingParams(temperature=1.5, top_k=1), SamplingParams(temperature=1.5, top_p=1e-6)):
        for _ in range(5):   # random rows, yet always the argmax
            assert s.sample(logits, [seq(f"r{i}", params) for i in range(8)]) == expected


def draws(sampler: Sampler, logits_row: torch.Tensor, target: SeqStep, others: list[SeqStep],
          position: int, steps: int) -> list[int]:
    """Sample `steps` tokens for `target` placed at row `position` among `others`."""
    out = []
    for step in range(steps):
        batch = list(others)
        batch.insert(position, target)
        logits = rand_logits(len(batch), seed=100 + step)
        logits[position] = logits_row
        out.append(sampler.sample(logits, batch)[position])
    return out


def test_seeded_request_is_the_same_alone_and_batched():
    row = torch.zeros(50)                       # uniform: every draw is pure noise
    target = seq("a", SamplingParams(temperature=1.0, seed=1234))
    alone = draws(Sampler(seed=0), row, target, [], 0, 20)
    others = [seq("u1", SamplingParams(temperature=1.0)), seq("s2", SamplingParams(temperature=0.7, seed=99)),
              seq("g3", SamplingParams(temperature=0.0)), seq("k4", SamplingParams(top_k=5, seed=3))]
    batched = draws(Sampler(seed=77), row, target, others, 2, 20)
    assert alone == batched
    assert len(set(alone)) >= 10                # the seed drives real randomness
    other_seed = draws(Sampler(seed=0), row, seq("a", SamplingParams(seed=4321)), [], 0, 20)
    assert other_seed != alone


def test_drop_forgets_generators():
    s = Sampler()
    row = torch.zeros(50)
    target = seq("a", SamplingParams(seed=42))
    first = draws(s, row, target, [], 0, 8)
    assert s.num_generators == 1
    s.drop(["a", "unknown"])
    assert s.num_generators == 0
    assert draws(s, row, target, [], 0, 8) == first    # a fresh generator restarts the stream


def frequencies(logits_row: torch.Tensor, params: SamplingParams, n: int = 4000) -> list[float]:
    s = Sampler(seed=11)
    toks = s.sample(logits_row.expand(n, -1).clone(), [seq(f"r{i}", params) for i in range(n)])
    counts = torch.bincount(torch.tensor(toks), minlength=logits_row.numel())
    return (counts.float() / n).tolist()


PROBS = torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0])
LOGITS = torch.log(PROBS.clamp(min=1e-12))


def test_distribution_matches_softmax():
    freq = frequencies(LOGITS, SamplingParams(temperature=1.0))
    for f, p in zip(freq, [0.5, 0.3, 0.2, 0.0, 0.0]):
        assert abs(f - p) < 0.03


def test_temperature_sharpens():
    freq = frequencies(LOGITS, SamplingParams(temperature=0.5))
    expected = [0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38, 0.0, 0.0]   # p^2, renormalised
    for f, p in zip(freq, expected):
        assert abs(f - p) < 0.03


def test_top_k_and_top_p_cut_the_tail():
    for params in (SamplingParams(top_k=2), SamplingParams(top_p=0.6)):
        freq = frequencies(LOGITS, params)
        assert freq[2] == 0.0 and freq[3] == 0.0
        assert abs(freq[0] - 0.5 / 0.8) < 0.03
    # 0.45 is reached by the first token alone, so the nucleus is {0}
    assert frequencies(LOGITS, SamplingParams(top_p=0.45))[0] == 1.0


def test_flat_rows_fall_back_to_the_whole_vocabulary():
    """A nucleus or top-k wider than the 256 sorted candidates stays exact."""
    vocab = 2000
    logits = torch.zeros(vocab)
    logits[:10] = 3.0                      # 10 likely tokens, then a flat tail
    z = 10 * math.exp(3) + vocab - 10
    # tail token j (0-based) is kept while the mass before it, (10 e^3 + j) / z, is < 0.9
    kept_tail = math.ceil(0.9 * z - 10 * math.exp(3))
    assert kept_tail == 1771
    freq = frequencies(logits, SamplingParams(top_p=0.9), n=3000)
    distinct = sum(1 for f in freq if f > 0)
    assert 1000 < distinct <= 10 + kept_tail
    freq_k = frequencies(logits, SamplingParams(top_k=600), n=3000)
    assert 400 < sum(1 for f in freq_k if f > 0) <= 600


def test_min_tokens_masks_eos_and_stop_tokens():
    logits = torch.full((1, 10), -5.0)
    logits[0, EOS], logits[0, 7], logits[0, 1] = 9.0, 8.0, 1.0
    s = Sampler(eos_token_ids=[EOS])
    p = SamplingParams(temperature=0.0, min_tokens=2, max_tokens=10, stop_token_ids=(7,))
    before = logits.clone()
    assert s.sample(logits, [seq("a", p, generated=1)]) == [1]     # eos and 7 masked
    assert torch.equal(logits, before)                             # on a copy
    assert s.sample(logits, [seq("a", p, generated=2)]) == [EOS]   # enough tokens now
    ignore = SamplingParams(temperature=0.0, min_tokens=2, max_tokens=10, stop_token_ids=(7,), ignore_eos=True)
    assert s.sample(logits.clone(), [seq("a", ignore, generated=0)]) == [EOS]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="logits"):
        Sampler().sample(torch.zeros(2, 5), [seq("a", SamplingParams())])
    assert Sampler().sample(torch.zeros(0, 5), []) == []


def test_no_nan_with_extreme_temperature():
    logits = rand_logits(4, seed=3)
    toks = Sampler().sample(logits, [seq(f"r{i}", SamplingParams(temperature=1e-4, top_p=0.9)) for i in range(4)])
    assert toks == logits.argmax(dim=-1).tolist()
    assert not math.isnan(float(logits.sum()))


def test_candidate_masks_equal_full_sort_masks():
    from jenga.engine.sampler import _outside_nucleus
    logits = rand_logits(6, vocab=5000, seed=9) * 3        # peaked rows
    ks, ps = [0, 5, 0, 40, 300, 0], [0.9, 1.0, 0.5, 0.95, 1.0, 0.99]
    fast, covered = _outside_nucleus(logits, ks, ps, 256)
    full, _ = _outside_nucleus(logits, ks, ps, 5000)
    ok = covered.tolist()
    assert ok == [True, True, True, True, False, True]     # top_k=300 > 256 candidates
    assert torch.equal(fast[[i for i in range(6) if ok[i]]], full[[i for i in range(6) if ok[i]]])
    assert int((~full[4]).sum()) == 300
