"""Parallel sampling (`SamplingParams.n > 1`): one prompt, n sequences.

As in vLLM v1, a request with n > 1 fans out into n child requests of the
scheduler, `{request_id}#{i}`, each with `n=1` and, when the parent is
seeded, seed `seed + i` (so child i samples exactly what a single request
with that seed would).  The children share the prompt's state through the
prefix cache, in every group: a child admitted while a sibling prefills
waits for that prefill (sched/prefill_wait.py) and then takes its pages by
reference (full, sliding, chunked, cross and vision pages; the Mamba state
is copied from the prompt-end checkpoint into the child's own page), so
n samples cost one prefill and one prompt's memory plus each child's
output.  Preemption, eviction and finishing are per child: preempting one
child frees only its own pages.

`ParentState` folds the children's RequestOutputs into the parent's: every
output it returns carries all n completions so far (`outputs[i].index ==
i`), `finished` once every child finished, and the one child's streaming
delta (with its `index`).  Beam search is not supported.
"""

from __future__ import annotations

from dataclasses import replace

from ..sched.params import SamplingParams
from .outputs import CompletionOutput, RequestMetrics, RequestOutput

SEPARATOR = "#"


def child_id(parent_id: str, index: int) -> str:
    return f"{parent_id}{SEPARATOR}{index}"


def child_params(params: SamplingParams, index: int) -> SamplingParams:
    """Child `index`'s params: n=1, and seed + index when seeded."""
    seed = None if params.seed is None else params.seed + index
    return replace(params, n=1, best_of=None, seed=seed)


class ParentState:
    """The n children of one request (mutated by `fold`)."""

    def __init__(self, request_id: str, n: int) -> None:
        self.request_id = request_id
        self.children = tuple(child_id(request_id, i) for i in range(n))
        self._index = {c: i for i, c in enumerate(self.children)}
        self._latest: dict[int, CompletionOutput] = {}
        self._first: RequestOutput | None = None
        self._first_token: float | None = None
        self._done: set[int] = set()

    @property
    def finished(self) -> bool:
        return len(self._done) == len(self.children)

    def fold(self, out: RequestOutput) -> RequestOutput:
        """The parent's output after child output `out` (see module doc)."""
        i = self._index[out.request_id]
        self._latest[i] = replace(out.outputs[0], index=i)
        if out.finished:
            self._done.add(i)
        first = self._first = self._first or out
        if out.metrics.first_token_time is not None:
            t = out.metrics.first_token_time
            self._first_token = t if self._first_token is None else min(self._first_token, t)
        blank = CompletionOutput("", ())
        outputs = tuple(self._latest.get(k, replace(blank, index=k)) for k in range(len(self.children)))
        finish_time = out.metrics.finish_time if self.finished else None
        metrics = RequestMetrics(first.metrics.arrival_time, self._first_token, finish_time,
                                 first.metrics.first_scheduled_time)
        delta = None if out.delta is None else replace(out.delta, index=i)
        return RequestOutput(self.request_id, first.prompt, first.prompt_token_ids, outputs, self.finished,
                             max(first.num_cached_tokens, out.num_cached_tokens), metrics, delta)


class Fanout:
    """The engine's live parents, by parent id and by child id."""

    def __init__(self) -> None:
        self.parents: dict[str, ParentState] = {}
        self._parent_of: dict[str, ParentState] = {}

    def add(self, request_id: str, n: int) -> tuple[str, ...]:
        """Register a parent of n children; returns the child ids."""
        p = ParentState(request_id, n)
        self.parents[request_id] = p
        for c in p.children:
            self._parent_of[c] = p
        return p.children

    def drop(self, request_id: str) -> None:
        p = self.parents.pop(request_id, None)
        if p is not None:
            for c in p.children:
                self._parent_of.pop(c, None)

    def fold(self, out: RequestOutput) -> RequestOutput:
        """A child's output as its parent's (others pass through); forgets
        a parent once all its children finished."""
        p = self._parent_of.get(out.request_id)
        if p is None:
            return out
        folded = p.fold(out)
        if p.finished:
            self.drop(p.request_id)
        return folded

    def user_id(self, req_id: str) -> str:
        """The id the user gave: a child's parent, else itself."""
        p = self._parent_of.get(req_id)
        return req_id if p is None else p.request_id
