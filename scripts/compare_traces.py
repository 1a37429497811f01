"""The seeded request traces of `compare_vllm_manager.py` (no vLLM, no torch).

Each builder returns `TraceReq`s with fixed prompt and output token ids and
Poisson arrival steps, so both managers replay exactly the same requests.
`TraceReq.shared` is how many of a request's first prompt tokens it shares
with the other requests of its `doc` (-1: none), which lets the driver count
shared state once when it measures what running requests need.

- `docs`: long documents, each asked several questions (document + 16-128
  question tokens), mixed with short independent prompts;
- `shared_system`: one short system prompt opening every request, then a
  unique user turn;
- `chats`: unique prompts and outputs of lognormal lengths;
- `long_unique`: long unique prompts with short outputs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

VOCAB = 32000


@dataclass(frozen=True)
class TraceReq:
    """One request: prompt, the tokens it will sample, the step it arrives
    at, its shared group (`doc`, -1 for none) and the prompt tokens it shares
    with that group (`shared`)."""

    req_id: str
    prompt: tuple[int, ...]
    output: tuple[int, ...]
    arrival: int
    doc: int
    shared: int = 0


def _check(n: int, rate: float) -> None:
    if n <= 0:
        raise ValueError(f"a trace needs at least one request, got {n}")
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(VOCAB) for _ in range(n)]


def _timed(rng: random.Random, rate: float, items) -> list[TraceReq]:
    """TraceReqs from (prompt, n_out, doc, shared) items with Poisson arrivals."""
    out, t = [], 0.0
    for i, (prompt, n_out, doc, shared) in enumerate(items):
        t += rng.expovariate(rate)
        out.append(TraceReq(f"r{i}", tuple(prompt), tuple(_tokens(rng, n_out)), int(t), doc, shared))
    return out


def make_trace(seed: int, docs: int, questions: int, shorts: int, rate: float,
               doc_len: tuple[int, int] = (2000, 7000), doc_out: int = 128,
               short_out: int = 256) -> list[TraceReq]:
    """`docs` documents of `doc_len` tokens asked `questions` questions each,
    and `shorts` prompts of 64-512 tokens, shuffled (module doc)."""
    if docs < 0 or questions < 0 or shorts < 0:
        raise ValueError("docs, questions and shorts must be >= 0")
    _check(docs * questions + shorts, rate)
    rng = random.Random(seed)
    texts = [_tokens(rng, rng.randint(*doc_len)) for _ in range(docs)]
    order = [(d, q) for d in range(docs) for q in range(questions)] + [(-1, s) for s in range(shorts)]
    rng.shuffle(order)
    items = []
    for d, _ in order:
        if d >= 0:
            items.append((texts[d] + _tokens(rng, rng.randint(16, 128)), doc_out, d, len(texts[d])))
        else:
            items.append((_tokens(rng, rng.randint(64, 512)), short_out, -1, 0))
    return _timed(rng, rate, items)


def shared_system_trace(seed: int, n: int, rate: float, system_len: int = 200,
                        user_len: tuple[int, int] = (32, 512), out: int = 128) -> list[TraceReq]:
    """Every request opens with one `system_len`-token system prompt."""
    _check(n, rate)
    rng = random.Random(seed)
    system = _tokens(rng, system_len)
    items = [(system + _tokens(rng, rng.randint(*user_len)), out, 0, system_len) for _ in range(n)]
    return _timed(rng, rate, items)


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, int(round(rng.lognormvariate(math.log(median), sigma)))))


def chats_trace(seed: int, n: int, rate: float, prompt_median: int = 600, out_median: int = 250,
                sigma: float = 0.9, max_len: int = 8192) -> list[TraceReq]:
    """Unique prompts and outputs of lognormal lengths (ShareGPT-like)."""
    _check(n, rate)
    rng = random.Random(seed)
    items = [(_tokens(rng, _lognormal(rng, prompt_median, sigma, 8, max_len)),
              _lognormal(rng, out_median, sigma, 2, max_len), -1, 0) for _ in range(n)]
    return _timed(rng, rate, items)


def long_unique_trace(seed: int, n: int, rate: float, prompt_len: tuple[int, int] = (8000, 32000),
                      out: int = 64) -> list[TraceReq]:
    """Long prompts that share nothing, short outputs."""
    _check(n, rate)
    rng = random.Random(seed)
    return _timed(rng, rate, [(_tokens(rng, rng.randint(*prompt_len)), out, -1, 0) for _ in range(n)])
