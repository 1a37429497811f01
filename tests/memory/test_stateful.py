"""Property-based test: random admit / grow / lookup / free / evict sequences
on random mixed-kind plans keep every invariant, and once every request ends
and the cache is cleared, every large page is free again.

The default run is derandomised (the same 150 examples every time, with or
without a CI environment); `JENGA_SLOW=1` adds a long run: many more
examples and longer sequences under several fixed seeds."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from helpers import BUDGET8, CHUNK8, CROSS, FULL, MAMBA, SLIDE8, VISION, manager_state, tiny_plan
from jenga.memory.manager import MemoryManager
from jenga.memory.types import ImageRef

KIND_SETS = [
    [(FULL, 1, 4), (SLIDE8, 2, 4)],
    [(FULL, 1, 4), (MAMBA, 2, 1)],
    [(FULL, 2, 4), (CHUNK8, 1, 4), (SLIDE8, 1, 8)],
    [(FULL, 1, 4), (CROSS, 1, 1)],
    [(FULL, 1, 4), (VISION, 1, 4), (SLIDE8, 1, 4)],
    [(FULL, 1, 4), (SLIDE8, 1, 4), (MAMBA, 1, 1), (VISION, 1, 4)],
    # several small pages to a large page in two groups, one page in the
    # third: stranded slots, so compaction runs
    [(FULL, 1, 4), (SLIDE8, 1, 4), (MAMBA, 4, 1)],
    [(FULL, 4, 4), (SLIDE8, 1, 4)],
    [(FULL, 1, 4), (BUDGET8, 1, 4), (MAMBA, 2, 1)],
]


class ManagerMachine(RuleBasedStateMachine):
    @initialize(kinds=st.sampled_from(KIND_SETS), num_large=st.integers(4, 40),
                allocator=st.sampled_from(["jenga", "uniform", "max-page", "static"]),
                caching=st.booleans(), slack=st.sampled_from([0, 64]))
    def setup(self, kinds, num_large, allocator, caching, slack):
        share = ()
        if allocator == "static":
            share = tuple([num_large // len(kinds)] * (len(kinds) - 1))
            share += (num_large - sum(share),)
        self.m = MemoryManager(tiny_plan(kinds, num_large, allocator, static_share=share),
                               enable_prefix_caching=caching, mamba_interval=8)
        self.m.pool.HEAP_SLACK = slack   # 0: heaps are rebuilt on almost every push
        self.live: dict[str, list[int]] = {}
        self.waiting: list[str] = []
        self.n = 0

    def allocate(self, rid, start, end, hit_tokens=0):
        """allocate, checking that a failure changes nothing at all, and that
        a success takes the pages `Policy.pages_needed` counted: all the
        required ones, and at most the optional ones more."""
        m, r = self.m, self.m.reqs[rid]
        before = manager_state(m)
        counts = [p.pages_needed(r, start, end, hit_tokens, m.pool) for p in m.policies]
        taken = [0] * len(m.policies)   # by the attempt that succeeded: a rollback restarts the count
        take, rollback = m.pool._take, m.pool.rollback
        m.pool._take = lambda gid, page: (taken.__setitem__(gid, taken[gid] + 1), take(gid, page))
        m.pool.rollback = lambda: (taken.__setitem__(slice(None), [0] * len(taken)), rollback())
        try:
            actions = m.allocate(rid, start, end, hit_tokens=hit_tokens)
        finally:
            del m.pool._take, m.pool.rollback
        if actions is None:
            assert manager_state(m) == before, "a failed allocation changed the manager's state"
        else:
            assert all(n <= t <= n + opt for (n, opt), t in zip(counts, taken)), (counts, taken)
        return actions

    @rule(prefix=st.integers(0, 3), extra=st.integers(1, 30), image=st.booleans(), new_step=st.booleans())
    def admit(self, prefix, extra, image, new_step):
        if new_step:
            self.tick()
        tokens = [7] * (prefix * 6) + [self.n * 100 + i for i in range(extra)]
        images = (ImageRef(min(2, len(tokens) - 1), 5, f"img{prefix}"),) if image else ()
        rid = f"r{self.n}"
        self.n += 1
        self.m.add(rid, tokens, len(tokens), images)
        hit = self.m.lookup(rid)
        assert hit.num_tokens < len(tokens)
        end = min(len(tokens), hit.num_tokens + 12)
        if self.allocate(rid, hit.num_tokens, end, hit_tokens=hit.num_tokens) is None:
            self.m.remove(rid)
            return
        self.m.commit(rid, end)
        self.live[rid] = tokens

    @precondition(lambda self: self.live)
    @rule(data=st.data(), grow=st.integers(1, 9), abort_mid_step=st.booleans(), new_step=st.booleans())
    def step(self, data, grow, abort_mid_step, new_step):
        if new_step:
            self.tick()
        rid = data.draw(st.sampled_from(sorted(self.live)))
        r, tokens = self.m.reqs[rid], self.live[rid]
        start = r.num_computed
        while len(tokens) < start + grow:
            tokens.append(len(tokens) % 5)
        if self.allocate(rid, start, start + grow) is None:
            self.m.release(rid)   # preempt
            self.m.remove(rid)
            del self.live[rid]
            return
        if abort_mid_step:   # the client left while the step ran
            self.m.check_invariants()
            self.m.remove(rid)
            del self.live[rid]
            return
        self.m.commit(rid, start + grow)

    @rule(prefix=st.integers(0, 3), extra=st.integers(1, 30))
    def queue(self, prefix, extra):
        rid = f"w{self.n}"
        self.n += 1
        self.m.add(rid, [7] * (prefix * 6) + [self.n * 100 + i for i in range(extra)], prefix * 6 + extra)
        self.m.lookup(rid)
        self.waiting.append(rid)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data(), admit=st.booleans())
    def relookup(self, data, admit):
        """A waiting request's remembered lookup equals a fresh scan, and
        its pages are still cached when it is admitted with that hit."""
        rid = data.draw(st.sampled_from(self.waiting))
        r = self.m.reqs[rid]
        hit, branch = self.m.lookup(rid), r.branch
        self.m._lookups.pop(rid, None)   # forget it: scan afresh
        assert (self.m.lookup(rid), r.branch) == (hit, branch)
        if admit:
            self.waiting.remove(rid)
            end = min(len(r.tokens), hit.num_tokens + 12)
            if self.allocate(rid, hit.num_tokens, end, hit_tokens=hit.num_tokens) is None:
                self.m.remove(rid)
                return
            self.m.commit(rid, end)
            self.live[rid] = r.tokens

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def finish(self, data):
        rid = data.draw(st.sampled_from(sorted(self.live)))
        self.m.remove(rid)
        del self.live[rid]

    @rule()
    def tick(self):
        """A new step: pages taken before it may move (compaction)."""
        self.m.tick()
        moves = self.m.take_moves()
        for gid, src, dst in moves:   # a copy never reads a page another copy writes
            assert (gid, src) not in {(g, d) for g, _, d in moves}

    @rule()
    def reset_cache(self):
        self.m.reset_prefix_cache()

    @invariant()
    def invariants_hold(self):
        if hasattr(self, "m"):
            self.m.check_invariants()

    def teardown(self):
        if not hasattr(self, "m"):
            return
        for rid in list(self.live) + self.waiting:
            self.m.remove(rid)
        self.m.reset_prefix_cache()
        self.m.check_invariants()
        assert self.m.pool.num_free_large() == self.m.plan.num_large_pages, "pages leaked"


TestManagerMachine = ManagerMachine.TestCase
TestManagerMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None, derandomize=True,
                                       database=None, suppress_health_check=[HealthCheck.too_slow])

SLOW_SEEDS = (1, 2, 3, 4, 5)


@pytest.mark.slow
@pytest.mark.parametrize("run_seed", SLOW_SEEDS)
def test_manager_machine_long_run(run_seed):
    """The same machine, 2,000 examples of up to 60 steps, per seed."""
    machine = seed(run_seed)(type("SeededManagerMachine", (ManagerMachine,), {}))
    run_state_machine_as_test(machine, settings=settings(
        max_examples=int(os.environ.get("JENGA_STATEFUL_EXAMPLES", "2000")), stateful_step_count=60,
        deadline=None, derandomize=False, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
