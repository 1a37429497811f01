"""The replay half of `compare_vllm_manager.py`: trace, driver, Jenga adapter.

`run` is one discrete-step continuous-batching loop written once for any
manager adapter (`JengaSide` here, `VllmSide` in `compare_vllm_side.py`): a
token budget per step, running requests first (decode 1 token, or the next
prefill chunk), then waiting requests in arrival order with their prefix hit
while the manager can allocate (none after a preemption, as in vLLM), and the
newest running request preempted (freed, recomputed later) when a running
request cannot grow.  A step "runs" by advancing each chosen request and
appending the trace's next output token once its known tokens are computed,
so two runs differ only in the manager.  The timer brackets manager calls
only.  No vLLM, no torch: the project's test suite drives this module.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field

from jenga.memory.manager import MemoryManager

VOCAB = 32000


@dataclass(frozen=True)
class TraceReq:
    """One request: prompt, the tokens it will sample (fixed, so both runs see
    the same), and the step at which it arrives; doc is -1 for short prompts."""

    req_id: str
    prompt: tuple[int, ...]
    output: tuple[int, ...]
    arrival: int
    doc: int


def make_trace(seed: int, docs: int, questions: int, shorts: int, rate: float,
               doc_len: tuple[int, int] = (2000, 7000), doc_out: int = 128,
               short_out: int = 256) -> list[TraceReq]:
    """Long shared documents with several questions each (so prefix caching
    matters) mixed with short prompts, shuffled, Poisson arrivals at `rate`
    requests per step.  Deterministic in `seed`."""
    if docs < 0 or questions < 0 or shorts < 0 or docs * questions + shorts == 0:
        raise ValueError("trace needs docs*questions + shorts > 0 (all >= 0)")
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    rng = random.Random(seed)
    texts = [[rng.randrange(VOCAB) for _ in range(rng.randint(*doc_len))] for _ in range(docs)]
    items = [(d, q) for d in range(docs) for q in range(questions)] + [(-1, s) for s in range(shorts)]
    rng.shuffle(items)
    out, t = [], 0.0
    for i, (d, _) in enumerate(items):
        t += rng.expovariate(rate)
        if d >= 0:
            prompt = texts[d] + [rng.randrange(VOCAB) for _ in range(rng.randint(16, 128))]
        else:
            prompt = [rng.randrange(VOCAB) for _ in range(rng.randint(64, 512))]
        n_out = doc_out if d >= 0 else short_out
        out.append(TraceReq(f"r{i}", tuple(prompt), tuple(rng.randrange(VOCAB) for _ in range(n_out)),
                            int(t), d))
    return out


# ----------------------------------------------------------------------- driver
@dataclass(eq=False)
class Live:
    """A request in flight: its live token list and tokens computed."""

    spec: TraceReq
    tokens: list[int]
    computed: int = 0
    admitted_once: bool = False
    handle: object = None   # the adapter's own per-request object

    @property
    def prompt_len(self) -> int:
        return len(self.spec.prompt)


@dataclass
class Result:
    """What one run measured (bytes are pool bytes held by running requests,
    sampled after each step's allocations)."""

    manager: str
    pool_bytes: int
    steps: int = 0
    busy_steps: int = 0
    peak_used: int = 0
    sum_used: int = 0
    sum_batch: int = 0
    sum_tokens: int = 0
    prompt_tokens: int = 0
    hit_tokens: int = 0
    recompute_hit_tokens: int = 0
    preemptions: int = 0
    computed_tokens: int = 0
    fail_used: list[int] = field(default_factory=list)   # bytes in use when a running request could not grow
    hash_seconds: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def mean(self, total: float) -> float:
        return total / self.busy_steps if self.busy_steps else 0.0

    @property
    def hit_rate(self) -> float:
        """Prompt tokens found in the prefix cache at first admission / prompt tokens."""
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def manager_us_per_step(self) -> float:
        return 1e6 * sum(self.seconds.values()) / self.steps if self.steps else 0.0


class _Timer:
    """Accumulates perf_counter time per manager operation."""

    def __init__(self, res: Result) -> None:
        self.res = res

    def __call__(self, op: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.res.seconds[op] = self.res.seconds.get(op, 0.0) + time.perf_counter() - t0
        self.res.calls[op] = self.res.calls.get(op, 0) + 1
        return out


def run(side, trace: list[TraceReq], token_budget: int, max_num_seqs: int) -> Result:
    """Replay `trace` through `side` (see module doc); raises RuntimeError if a
    request can never fit the pool."""
    res = Result(side.name, side.pool_bytes)
    timed = _Timer(res)
    pending = deque(sorted(trace, key=lambda r: r.arrival))
    waiting: deque[Live] = deque()
    running: list[Live] = []
    while pending or waiting or running:
        while pending and pending[0].arrival <= res.steps:
            spec = pending.popleft()
            live = Live(spec, list(spec.prompt))
            timed("add", side.add, live)
            waiting.append(live)
            res.prompt_tokens += live.prompt_len
        timed("step", side.new_step)
        chosen, preempted = _schedule_running(side, timed, running, waiting, token_budget, res)
        if not preempted:
            _admit(side, timed, running, waiting, token_budget - sum(n for _, n in chosen),
                   max_num_seqs, chosen, res)
        if not chosen and waiting and not running:
            raise RuntimeError(f"request {waiting[0].spec.req_id} cannot fit the pool even alone")
        res.steps += 1
        if chosen:
            used = side.used_bytes()
            res.busy_steps += 1
            res.peak_used = max(res.peak_used, used)
            res.sum_used += used
            res.sum_batch += len(chosen)
            res.sum_tokens += sum(n for _, n in chosen)
        _execute(side, timed, running, chosen, res)
    res.hash_seconds = side.hash_seconds
    return res


def _schedule_running(side, timed, running, waiting, budget, res):
    chosen, preempted, i = [], False, 0
    while i < len(running) and budget > 0:
        r = running[i]
        n = side.clip(r, r.computed, min(len(r.tokens) - r.computed, budget), 0)
        if n == 0:
            i += 1
            continue
        ok = timed("allocate", side.allocate, r, n)
        if not ok:
            res.fail_used.append(side.used_bytes())
        while not ok:
            victim = running.pop()
            timed("free", side.preempt, victim)
            victim.computed = 0
            waiting.appendleft(victim)
            res.preemptions += 1
            preempted = True
            if victim is r:
                break
            ok = timed("allocate", side.allocate, r, n)
        if not ok:
            break
        chosen.append((r, n))
        budget -= n
        i += 1
    return chosen, preempted


def _admit(side, timed, running, waiting, budget, max_num_seqs, chosen, res):
    while waiting and budget > 0 and len(running) < max_num_seqs:
        r = waiting[0]
        hit = timed("lookup", side.lookup, r)
        n = side.clip(r, hit, min(len(r.tokens) - hit, budget), hit)
        if n == 0 or not timed("allocate", side.admit, r, hit, n, bool(running)):
            break
        waiting.popleft()
        running.append(r)
        r.computed = hit
        if r.admitted_once:
            res.recompute_hit_tokens += hit
        else:
            res.hit_tokens += hit
            r.admitted_once = True
        chosen.append((r, n))
        budget -= n


def _execute(side, timed, running, chosen, res):
    """The step 'ran': advance, publish, sample the trace's next token, end
    requests that reached their output length."""
    for r, n in chosen:
        r.computed += n
        res.computed_tokens += n
        timed("commit", side.commit, r)
        if r.computed == len(r.tokens):
            produced = len(r.tokens) - r.prompt_len
            tok = r.spec.output[produced]
            r.tokens.append(tok)
            timed("commit", side.append, r, tok)
            if produced + 1 == len(r.spec.output):
                running.remove(r)
                timed("free", side.finish, r)


# ---------------------------------------------------------------- Jenga adapter
class JengaSide:
    """Jenga's MemoryManager through its public calls: add, lookup,
    allocate(start, end, hit_tokens), commit, release/remove, usage.

    The adapter contract `run` relies on (VllmSide keeps the same): `add` a
    request on arrival; `lookup` returns its prefix hit in tokens; `clip`
    may shorten a chunk of n tokens starting at `start`; `admit` (first
    allocation, taking the hit) and `allocate` (a running request's next n
    tokens) return False and hold nothing new when memory is short; `commit`
    after a step with `r.computed` advanced; `append` a sampled token;
    `preempt` frees a request that will be recomputed, `finish` one that
    ended; `used_bytes` is pool bytes held by requests.
    """

    name = "jenga"
    hash_seconds = None   # hashing (built-in tuple hash) runs inside lookup/commit, not timed apart

    def __init__(self, plan, mamba_interval: int = 512) -> None:
        self.mm = MemoryManager(plan, mamba_interval=mamba_interval)
        self.pool_bytes = plan.pool_bytes

    def new_step(self) -> None:
        self.mm.tick()

    def add(self, r: Live) -> None:
        self.mm.add(r.spec.req_id, r.tokens, r.prompt_len)   # shares the live token list

    def lookup(self, r: Live) -> int:
        return self.mm.lookup(r.spec.req_id).num_tokens

    def clip(self, r: Live, start: int, n: int, hit: int) -> int:
        return n   # Jenga saves recurrent checkpoints inside a chunk: no alignment split

    def admit(self, r: Live, hit: int, n: int, others_running: bool) -> bool:
        return self.mm.allocate(r.spec.req_id, hit, hit + n, hit_tokens=hit) is not None

    def allocate(self, r: Live, n: int) -> bool:
        return self.mm.allocate(r.spec.req_id, r.computed, r.computed + n) is not None

    def commit(self, r: Live) -> None:
        self.mm.commit(r.spec.req_id, r.computed)

    def append(self, r: Live, tok: int) -> None:
        pass   # the manager reads the shared token list; hashing happens in lookup/commit

    def preempt(self, r: Live) -> None:
        self.mm.release(r.spec.req_id)

    def finish(self, r: Live) -> None:
        self.mm.remove(r.spec.req_id)

    def used_bytes(self) -> int:
        return self.mm.usage().used_bytes
