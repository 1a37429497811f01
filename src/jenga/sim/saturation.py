"""When was the pool exhausted, and how much of it held state that layers
really need at that moment: the simulator's utilisation bookkeeping.

`PoolObserver` subscribes to a MemoryManager (memory/observe.py) and
watches the scheduler's calls.  It remembers, per request holding pages, the token range of its latest
allocation, so `need()` gives the true need of everything held right now
(`memory.footprint.TrueNeed` of the jenga plan: the same yardstick for every
allocator; a request allocated in the current step counts the state its
step reads or writes, one allocated earlier what it keeps).  The first time
in a step that memory says no, it takes a `PoolSample`:

- `PREEMPT`: an allocation for a running request failed (the scheduler
  preempts next); the allocator could not serve a request it had admitted;
- `REFUSED`: admission of the head request was refused while the pool's
  free bytes (not used by any request; cached pages count as free) were
  below what the request asked for, in whole pages of the reference plan
  (the step it asked to run, or its whole prefill's peak when the scheduler
  checks the whole prompt first): the pool was full for it;
- `REFUSED_WITH_ROOM`: refused although that many bytes were free: the free
  bytes are in the wrong places (other groups' large pages, stray slots) or
  the scheduler kept a margin.

With prefix caching on, state that several held requests share through a
prefix hit (equal token blocks by the cache's chained hashes, wholly in
each one's scope) counts once; encoder state shared by equal images and
equal prefixes computed without a hit still count once per request.

A step is *memory-bound* when its first sample is PREEMPT or REFUSED.
Samples are taken at that instant, not after the step: a preemption frees
the victim's pages and would hide how full the pool was.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..memory.footprint import TrueNeed
from ..memory.hashing import BlockHasher
from ..memory.manager import MemoryManager
from ..memory.observe import MemoryObserver

PREEMPT, REFUSED, REFUSED_WITH_ROOM = "preempt", "refused", "refused_with_room"


@dataclass(frozen=True)
class PoolSample:
    """The pool at the instant memory first said no in a step.

    true_need: bytes per group of the reference plan that held state needs;
    rounded_need: the same rounded up to the reference plan's small pages
    (what a perfect allocator with those pages would hold); counted_need:
    the allocator's own count (`MemoryUsage.needed_bytes`); used_bytes:
    bytes in pages requests hold; asked_bytes: what the refused request
    asked for, in the reference plan's pages (0 for PREEMPT).  So pool =
    free (pool - used) + held beyond whole pages (used - rounded) + page
    rounding (rounded - true) + true need."""

    kind: str
    true_need: tuple[int, ...]
    rounded_need: int
    counted_need: int
    used_bytes: int
    pool_bytes: int
    asked_bytes: int

    @property
    def utilisation(self) -> float:
        return sum(self.true_need) / self.pool_bytes

    @property
    def counted_utilisation(self) -> float:
        return self.counted_need / self.pool_bytes

    @property
    def memory_bound(self) -> bool:
        return self.kind != REFUSED_WITH_ROOM


@dataclass(frozen=True)
class SaturationSummary:
    """Means of PoolSample fractions of the pool over a run's samples (None
    where there was no sample).  util_bound: true need over memory-bound
    steps, measure (b); util_preempt: over steps bound by a failed
    allocation, measure (a); util_with_room: over refusals with room (not
    memory-bound: the free bytes were misplaced); counted, used, rounded:
    the allocator's own count, bytes held, and page-rounded need over the
    memory-bound steps; refused_free, refused_asked: free bytes and what the
    head request asked for over the REFUSED steps (how coarse a request is
    next to the pool)."""

    bound_steps: int
    preempt_steps: int
    refused_with_room: int
    util_bound: float | None
    util_preempt: float | None
    util_with_room: float | None
    counted: float | None
    used: float | None
    rounded: float | None
    refused_free: float | None
    refused_asked: float | None

    @staticmethod
    def of(samples: list[PoolSample]) -> SaturationSummary:
        bound = [s for s in samples if s.memory_bound]
        failed = [s for s in bound if s.kind == PREEMPT]
        room = [s for s in samples if not s.memory_bound]
        refused = [s for s in bound if s.kind == REFUSED]

        def mean(xs, f):
            return sum(f(x) for x in xs) / len(xs) if xs else None
        return SaturationSummary(len(bound), len(failed), len(room), mean(bound, lambda x: x.utilisation),
                                 mean(failed, lambda x: x.utilisation), mean(room, lambda x: x.utilisation),
                                 mean(bound, lambda x: x.counted_utilisation),
                                 mean(bound, lambda x: x.used_bytes / x.pool_bytes),
                                 mean(bound, lambda x: x.rounded_need / x.pool_bytes),
                                 mean(refused, lambda x: 1 - x.used_bytes / x.pool_bytes),
                                 mean(refused, lambda x: x.asked_bytes / x.pool_bytes))


class PoolObserver(MemoryObserver):
    """Samples `manager`'s pool when it first refuses in a step (module
    doc); subscribes itself.  `need` must measure the same model.  Call
    `begin_step()` before each `schedule()`; `sample` is that step's first
    refusal, or None."""

    def __init__(self, manager: MemoryManager, need: TrueNeed) -> None:
        self.manager = manager
        self.need_model = need
        self.step_no = 0
        self.sample: PoolSample | None = None
        self._encoder: dict[str, int] = {}
        self._held: dict[str, tuple[int, int, int]] = {}   # req -> (step, start, end) of its last allocation
        self._hits: dict[str, int] = {}                    # held req -> tokens its first allocation hit
        self._blocks: dict[str, tuple[BlockHasher, list[int], int]] = {}   # req -> (hasher, tokens, prompt len)
        self._runs: dict[str, list[int]] | None = None     # held req -> its shared blocks; None: stale
        manager.subscribe(self)

    def begin_step(self) -> None:
        self.step_no += 1
        self.sample = None

    def added(self, req_id, tokens, prompt_len, images, salt, model) -> None:
        self._encoder[req_id] = sum(img.num_tokens for img in images)
        if self.manager.caching:
            hasher = BlockHasher(self.need_model.plan.base_page_tokens, images, salt, model)
            self._blocks[req_id] = (hasher, tokens, prompt_len)

    def removed(self, req_id: str) -> None:
        del self._encoder[req_id]
        self._blocks.pop(req_id, None)

    def released(self, req_id: str) -> None:
        if self._held.pop(req_id, None) is not None:
            self._runs = None
        self._hits.pop(req_id, None)

    def allocated(self, req_id, start, end, hit_tokens, actions) -> None:
        if actions is not None:
            if req_id not in self._held:
                self._runs = None
                if hit_tokens:
                    self._hits[req_id] = hit_tokens
            self._held[req_id] = (self.step_no, start, end)
        elif req_id in self._held:
            self._observe(PREEMPT, 0)
        else:
            self._observe(REFUSED, sum(self.need_model.rounded(start, end, self._encoder[req_id], True)))

    def room_checked(self, num_tokens, encoder_tokens, chunk, room) -> None:
        if not room:
            peak = self.need_model.prefill_peak(num_tokens, encoder_tokens, chunk or num_tokens, rounded=True)
            self._observe(REFUSED, sum(peak))

    def need(self) -> tuple[int, ...]:
        """True need per group of everything requests hold now."""
        total = [0] * len(self.need_model.unit)
        for req_id, (step, start, end) in self._held.items():
            enc = self._encoder[req_id]
            part = self.need_model.step(start, end, enc) if step == self.step_no else self.need_model.kept(end, enc)
            for g, b in enumerate(part):
                total[g] += b
        if self._hits:
            for g, extra in enumerate(self._shared_twice()):
                total[g] -= extra
        return tuple(total)

    def _prompt_blocks(self, req_id: str, n: int) -> list[int]:
        hasher, tokens, prompt_len = self._blocks[req_id]
        return hasher.update(tokens, min(n * hasher.block_tokens, prompt_len))[:n]

    def _shared_twice(self) -> list[int]:
        """Per group: bytes `need()` counted more than once because held
        requests share prompt blocks through prefix hits (module doc).
        Keys are chained, so a request's shared blocks are a run from block
        0; runs are recomputed only when the held requests change."""
        B = self.need_model.plan.base_page_tokens
        if self._runs is None:
            shared: set[int] = set()
            for req_id, hit in self._hits.items():
                shared.update(self._prompt_blocks(req_id, hit // B))
            longest = max(self._hits.values()) // B
            self._runs = {}
            for req_id in self._held:
                keys = self._prompt_blocks(req_id, longest)
                n = next((k for k, key in enumerate(keys) if key not in shared), len(keys))
                if n:
                    self._runs[req_id] = keys[:n]
        extra = []
        for g, unit in enumerate(self.need_model.unit):
            parts = []
            for req_id, run in self._runs.items():
                step, start, end = self._held[req_id]
                lo = self.need_model.scope_start(start, end, step == self.step_no)[g]
                if lo is not None and -(-lo // B) < min(len(run), end // B):
                    parts.append(run[-(-lo // B):end // B])
            total = sum(len(x) for x in parts)
            extra.append((total - len(set().union(*parts))) * B * unit if parts else 0)
        return extra

    def rounded_need(self) -> int:
        """`need()` rounded up to the reference plan's small pages."""
        return sum(sum(self.need_model.rounded(start, end, self._encoder[req_id], step == self.step_no))
                   for req_id, (step, start, end) in self._held.items())

    def _observe(self, kind: str, asked: int) -> None:
        """Sample the pool, unless the step already has a sample that bound
        memory (the first such refusal is the one that bound it) or this
        refusal had room and the step already has a sample."""
        if self.sample is not None and self.sample.memory_bound:
            return
        usage = self.manager.usage()
        if kind == REFUSED and usage.pool_bytes - usage.used_bytes >= asked:
            kind = REFUSED_WITH_ROOM
        if self.sample is not None and kind == REFUSED_WITH_ROOM:
            return
        self.sample = PoolSample(kind, self.need(), self.rounded_need(), usage.needed_bytes, usage.used_bytes,
                                 usage.pool_bytes, asked)
