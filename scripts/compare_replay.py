"""The replay half of `compare_vllm_manager.py`: driver, need meter, Jenga adapter
(the traces are in `compare_traces.py`).

`run` is one discrete-step continuous-batching loop written once for any
manager adapter (`JengaSide` here, `VllmSide` in `compare_vllm_side.py`): a
token budget per step, running requests first (decode 1 token, or the next
prefill chunk), then waiting requests in arrival order with their prefix hit
while the manager can allocate (none after a preemption, as in vLLM), and the
newest running request preempted (freed, recomputed later) when a running
request cannot grow.  A step "runs" by advancing each chosen request and
appending the trace's next output token once its known tokens are computed,
so two runs differ only in the manager and what each system's scheduler
asks of it at admission (`JengaSide`, `VllmSide`).  The timer brackets
manager calls only.  No vLLM, no torch: the project's test suite drives this module.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from compare_traces import TraceReq, make_trace  # noqa: F401  (make_trace: the docs trace, re-exported)
from jenga.memory.footprint import TrueNeed
from jenga.memory.manager import MemoryManager
from jenga.sched.prefill_wait import InflightPrefills, SharedPrefixes
from jenga.sched.request import Status


# ----------------------------------------------------------------------- driver
@dataclass(eq=False)
class Live:
    """A request in flight: its live token list and tokens computed."""

    trace: TraceReq
    tokens: list[int]
    computed: int = 0
    admitted_once: bool = False
    finished: bool = False
    handle: object = None   # the adapter's own per-request object

    @property
    def prompt_len(self) -> int:
        return len(self.trace.prompt)


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
    min_tokens: int = 0          # tokens a run must compute: prompts less first-admission hits, outputs but the last
    bound_steps: int = 0         # steps where memory refused an admission or a running request
    bound_need: float = 0.0      # sum over those steps of the bytes running requests need / pool
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
    def recomputed_tokens(self) -> int:
        """Tokens computed more than once (after preemptions)."""
        return self.computed_tokens - (self.min_tokens - self.hit_tokens)

    @property
    def util_bound(self) -> float | None:
        """Mean share of the pool holding state running requests still need,
        over the steps where memory bound (None if it never did)."""
        return self.bound_need / self.bound_steps if self.bound_steps else None

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


class NeedMeter:
    """Bytes of state the running requests need after a step, the same for
    both managers: per group of a Jenga plan with the true specs, the tokens
    in scope (policy `scope_start`) or the states a policy keeps, with the
    document prefix that requests of one `doc` share counted once."""

    def __init__(self, ref_plan) -> None:
        self.need = TrueNeed(ref_plan)

    def bytes(self, running: list[tuple[int, TraceReq]]) -> int:
        """running: (tokens computed after the step, trace request) pairs."""
        total, shared = 0, {}
        for end, t in running:
            if end <= 0:
                continue
            lows = self.need.scope_start(end, end, False)
            for g, (kept, lo, unit) in enumerate(zip(self.need.kept(end, 0), lows, self.need.unit)):
                if lo is None or t.doc < 0 or not t.shared:
                    total += kept if lo is None else (end - lo) * unit
                    continue
                total += max(0, end - max(lo, t.shared)) * unit
                if min(end, t.shared) > lo:
                    shared.setdefault((t.doc, g), []).append((lo, min(end, t.shared)))
        for (_, g), spans in shared.items():
            covered, hi = 0, 0
            for lo, end in sorted(spans):
                covered += max(0, end - max(lo, hi))
                hi = max(hi, end)
            total += covered * self.need.unit[g]
        return total


def run(side, trace: list[TraceReq], token_budget: int, max_num_seqs: int, need: NeedMeter | None = None) -> Result:
    """Replay `trace` through `side` (see module doc); `need` measures
    utilisation on the steps where memory binds.  Raises RuntimeError if a
    request can never fit the pool."""
    res = Result(side.name, side.pool_bytes)
    res.min_tokens = sum(len(t.prompt) + len(t.output) - 1 for t in trace)
    timed = _Timer(res)
    pending = deque(sorted(trace, key=lambda r: r.arrival))
    waiting: deque[Live] = deque()
    running: list[Live] = []
    while pending or waiting or running:
        while pending and pending[0].arrival <= res.steps:
            t = pending.popleft()
            live = Live(t, list(t.prompt))
            timed("add", side.add, live)
            waiting.append(live)
            res.prompt_tokens += live.prompt_len
        timed("step", side.new_step)
        chosen, preempted = _schedule_running(side, timed, running, waiting, token_budget, res)
        refused = False
        if not preempted:
            refused = _admit(side, timed, running, waiting, token_budget - sum(n for _, n in chosen),
                             max_num_seqs, chosen, res)
        if not chosen and waiting and not running:
            raise RuntimeError(f"request {waiting[0].trace.req_id} cannot fit the pool even alone")
        if (preempted or refused) and need is not None:
            step = {id(r): n for r, n in chosen}
            res.bound_steps += 1
            res.bound_need += need.bytes([(r.computed + step.get(id(r), 0), r.trace) for r in running]) / side.pool_bytes
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


def _admit(side, timed, running, waiting, budget, max_num_seqs, chosen, res) -> bool:
    """Admit in arrival order; True when memory refused a request (`admit`
    False; None means the adapter holds it back for another reason)."""
    while waiting and budget > 0 and len(running) < max_num_seqs:
        r = waiting[0]
        hit = timed("lookup", side.lookup, r)
        n = side.clip(r, hit, min(len(r.tokens) - hit, budget), hit)
        if n == 0:
            break
        ok = timed("allocate", side.admit, r, hit, n, bool(running))
        if not ok:
            return ok is False
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
    return False


def _execute(side, timed, running, chosen, res):
    """The step 'ran': advance, publish, sample the trace's next token, end
    requests that reached their output length."""
    for r, n in chosen:
        r.computed += n
        res.computed_tokens += n
        timed("commit", side.commit, r)
        if r.computed == len(r.tokens):
            produced = len(r.tokens) - r.prompt_len
            tok = r.trace.output[produced]
            r.tokens.append(tok)
            timed("commit", side.append, r, tok)
            if produced + 1 == len(r.trace.output):
                running.remove(r)
                r.finished = True
                timed("free", side.finish, r)


# ---------------------------------------------------------------- Jenga adapter
class _Peer:
    """The fields of a scheduler Request that the shared-prefix classes read."""

    cache_salt, images = "", ()

    def __init__(self, live: Live) -> None:
        self.live = live
        self.req_id = live.trace.req_id
        self.prompt_token_ids = live.trace.prompt
        self.prompt_len = len(live.trace.prompt)

    @property
    def status(self) -> Status:
        return Status.FINISHED if self.live.finished else Status.RUNNING

    @property
    def num_computed(self) -> int:
        return self.live.computed


class JengaSide:
    """Jenga's MemoryManager through its public calls: add, lookup,
    allocate(start, end, hit_tokens), commit, release/remove, usage; with
    `scheduler_rules` (the default, as Jenga ships) also what our scheduler
    asks of it around admission: a prompt that takes several chunks is
    admitted only if `has_room_for` its whole prefill, arrivals tell the
    manager of prefixes they share with live requests (`share_prefix`), and
    a request waits a step for a running prefill of its prefix
    (`shared_prefill_wait`, 32 tokens).

    The adapter contract `run` relies on (VllmSide keeps the same): `add` a
    request on arrival; `lookup` returns its prefix hit in tokens; `clip`
    may shorten a chunk of n tokens starting at `start`; `admit` (first
    allocation, taking the hit) and `allocate` (a running request's next n
    tokens) return False and hold nothing new when memory is short (`admit`
    None: held back for another reason); `commit` after a step with
    `r.computed` advanced; `append` a sampled token; `preempt` frees a
    request that will be recomputed, `finish` one that ended; `used_bytes`
    is pool bytes held by requests.
    """

    hash_seconds = None   # hashing (built-in tuple hash) runs inside lookup/commit, not timed apart

    def __init__(self, plan, mamba_interval: int | None = None, *, token_budget: int = 2048,
                 scheduler_rules: bool = True, shared_prefill_wait: int = 32) -> None:
        self.mm = MemoryManager(plan, mamba_interval=mamba_interval)
        self.pool_bytes = plan.pool_bytes
        self.name = "jenga" if scheduler_rules else "jenga, bare driver"
        self.token_budget, self.rules = token_budget, scheduler_rules
        step = self.mm.shared_prefix_step()
        self.shared = SharedPrefixes(step, self.mm.share_prefix) if scheduler_rules and step else None
        self.wait = shared_prefill_wait if scheduler_rules else 0
        self.running: dict[str, _Peer] = {}
        self.inflight = None

    def new_step(self) -> None:
        self.mm.tick()
        if self.wait:
            self.inflight = InflightPrefills(self.wait, list(self.running.values()), self.mm.shared_prefix_step())

    def add(self, r: Live) -> None:
        self.mm.add(r.trace.req_id, r.tokens, r.prompt_len)   # shares the live token list
        r.handle = _Peer(r)
        if self.shared is not None:
            self.shared.arrive(r.handle)

    def lookup(self, r: Live) -> int:
        return self.mm.lookup(r.trace.req_id).num_tokens

    def clip(self, r: Live, start: int, n: int, hit: int) -> int:
        return n   # Jenga saves recurrent checkpoints inside a chunk: no alignment split

    def admit(self, r: Live, hit: int, n: int, others_running: bool) -> bool | None:
        if self.inflight is not None and self.inflight.should_wait(r.handle, hit):
            return None
        if (self.rules and others_running and hit + n < len(r.tokens)
                and not self.mm.has_room_for(len(r.tokens), 0, self.token_budget)):
            return False
        if self.mm.allocate(r.trace.req_id, hit, hit + n, hit_tokens=hit) is None:
            return False
        self.running[r.trace.req_id] = r.handle
        if self.inflight is not None and hit < r.prompt_len:
            r.computed = hit   # the wait compares with what it has computed
            self.inflight.add(r.handle)
        return True

    def allocate(self, r: Live, n: int) -> bool:
        return self.mm.allocate(r.trace.req_id, r.computed, r.computed + n) is not None

    def commit(self, r: Live) -> None:
        self.mm.commit(r.trace.req_id, r.computed)

    def append(self, r: Live, tok: int) -> None:
        pass   # the manager reads the shared token list; hashing happens in lookup/commit

    def preempt(self, r: Live) -> None:
        self.running.pop(r.trace.req_id, None)
        self.mm.release(r.trace.req_id)

    def finish(self, r: Live) -> None:
        self.running.pop(r.trace.req_id, None)
        if self.shared is not None:
            self.shared.leave(r.handle)
        self.mm.remove(r.trace.req_id)

    def used_bytes(self) -> int:
        return self.mm.usage().used_bytes
