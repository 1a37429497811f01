"""The continuous-batching scheduler (vLLM-v1 style) over a MemoryManager.

Each `schedule()` spends a token budget: running requests first (decodes and
the rest of chunked prefills, in arrival order), then waiting requests in
order, each admitted with its prefix hit.  When the manager cannot make
room for a running request, the most recently admitted running request is
preempted (its pages freed; it is recomputed later, its prefix cache hits
permitting).  `update()` applies a StepResult: commits the computed tokens,
appends sampled tokens and ends requests on eos, stop tokens, max_tokens or
the context limit.  A request that cannot fit even alone is ended with
FinishReason.ERROR instead of waiting forever.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from ..memory.manager import NOTHING, MemoryManager
from .config import SchedulerConfig
from .prefill_wait import InflightPrefills, SharedPrefixes
from .request import FinishReason, Request, Status
from .stats import SchedulerStats
from .step import PageCopy, SeqStep, StateSave, StepPlan, StepResult


_new_tuple = tuple.__new__


class QueueFull(RuntimeError):
    """The waiting queue is at max_waiting; retry later."""


class RequestUpdate(NamedTuple):
    """What one step did to one request: tokens it gained, and whether and
    why it finished (immutable; a NamedTuple because one is built per
    request per step)."""

    req_id: str
    new_token_ids: tuple[int, ...]
    finished: bool
    finish_reason: FinishReason | None
    num_cached_tokens: int = 0


class Scheduler:
    """Decides, each step, which tokens of which requests run."""

    def __init__(self, config: SchedulerConfig, manager: MemoryManager, *, max_model_len: int) -> None:
        if max_model_len <= 1:
            raise ValueError(f"max_model_len must be > 1, got {max_model_len}")
        self.config, self.manager, self.max_model_len = config, manager, max_model_len
        self.requests: dict[str, Request] = {}
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.stats = SchedulerStats(num_groups=len(manager.plan.groups))
        self._finished_ids: list[str] = []
        self._errors: list[RequestUpdate] = []
        self._step = 0
        step = manager.shared_prefix_step() if config.enable_prefix_caching else None
        self._shared = SharedPrefixes(step, manager.share_prefix) if step else None

    # ------------------------------------------------------------ requests
    def add_request(self, req: Request) -> None:
        """Queue a request.  Raises ValueError if it can never run (too long,
        larger than the whole pool, duplicate id) and QueueFull when the
        queue is at its limit."""
        if req.req_id in self.requests:
            raise ValueError(f"request id {req.req_id!r} is already in use")
        if req.prompt_len >= self.max_model_len:
            raise ValueError(f"prompt has {req.prompt_len} tokens but the model's context is "
                             f"{self.max_model_len} (prompt + at least one output token must fit)")
        if not self.config.enable_chunked_prefill and req.prompt_len > self.config.max_num_batched_tokens:
            raise ValueError(f"prompt has {req.prompt_len} tokens, more than max_num_batched_tokens="
                             f"{self.config.max_num_batched_tokens} with chunked prefill disabled")
        # drafts being verified and the draft's lookahead need pages too
        spare = 2 * self.config.num_speculative_tokens
        total = min(req.prompt_len + req.params.max_tokens, self.max_model_len) + spare
        chunk = min(req.prompt_len, self.config.max_num_batched_tokens)
        if not self.manager.fits_alone(total, req.num_encoder_tokens, chunk):
            where = ("its group's static partition of the pool" if self.manager.plan.static_share
                     else "the whole pool")
            raise ValueError(f"request needs more KV memory ({total} tokens) than {where} "
                             f"({self.manager.plan.pool_bytes} bytes); raise the KV budget or lower max_tokens")
        if len(self.waiting) >= self.config.max_waiting:
            raise QueueFull(f"{len(self.waiting)} requests are already waiting")
        self.manager.add(req.req_id, req.all_token_ids, req.prompt_len, req.images, req.cache_salt)
        self.requests[req.req_id] = req
        self.waiting.append(req)
        if self._shared is not None:
            self._shared.arrive(req)

    def finish_request(self, req_id: str, reason: FinishReason) -> bool:
        """End a request now (abort, stop string).  Returns False if unknown."""
        req = self.requests.get(req_id)
        if req is None:
            return False
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self._finish(req, reason)
        return True

    def _finish(self, req: Request, reason: FinishReason) -> None:
        req.status, req.finish_reason = Status.FINISHED, reason
        self.manager.remove(req.req_id)
        if self._shared is not None:
            self._shared.leave(req)
        del self.requests[req.req_id]
        self._finished_ids.append(req.req_id)
        self.stats.num_finished += 1

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # ------------------------------------------------------------ schedule
    def schedule(self) -> StepPlan:
        """Choose this step's work and take its pages; see module doc."""
        self.manager.tick()
        self._step += 1
        budget = self.config.max_num_batched_tokens
        chosen: list[tuple[Request, int, int, object]] = []
        self.stats.waiting_for_memory = False
        if not self.config.mixed_batches and self.waiting:
            self._admit(budget, chosen)   # vLLM v0: a step of new prefills only, when any fits
        if not chosen:
            budget, preempted = self._schedule_running(budget, chosen)
            if not preempted and self.config.mixed_batches:
                budget = self._admit(budget, chosen)
        self.stats.num_running, self.stats.num_waiting = len(self.running), len(self.waiting)
        return self._build_plan(chosen)

    def _schedule_running(self, budget: int, chosen: list) -> tuple[int, bool]:
        """Running requests first, in order, preempting the newest when
        memory is short; returns (budget left, whether it preempted)."""
        preempted = False
        i, running, allocate = 0, self.running, self.manager.allocate
        drafting = self.config.num_speculative_tokens > 0
        while i < len(running) and budget > 0:
            req = running[i]
            start = req.num_computed
            n = len(req.all_token_ids) - start
            if n > budget:
                n = budget
            # a plain decode skips the draft arithmetic (both are then 0)
            num_draft = self._drafts_for(req, start, n, budget) if req.spec_token_ids else 0
            look = self._lookahead(req, num_draft) if drafting else 0
            end = start + n + num_draft
            actions = allocate(req.req_id, start, end, 0, num_draft, look)
            while actions is None:
                victim = running[-1]
                self._preempt(victim)
                preempted = True
                if victim is req:
                    break
                actions = allocate(req.req_id, start, end, 0, num_draft, look)
            if actions is None:
                if not self.running:   # it could not fit even alone
                    self._error(req)
                continue
            chosen.append((req, start, end, actions))
            budget -= n + num_draft
            i += 1
        return budget, preempted

    def _drafts_for(self, req: Request, start: int, n: int, budget: int) -> int:
        """Draft tokens to verify this step: only for a decode with fresh
        proposals, within the budget and the context."""
        if not req.spec_token_ids or start + n != len(req.all_token_ids):
            return 0
        room = self.max_model_len - len(req.all_token_ids) - 1
        return max(0, min(len(req.spec_token_ids), budget - n, room, req.params.max_tokens - req.num_output - 1))

    def _lookahead(self, req: Request, num_draft: int) -> int:
        k = self.config.num_speculative_tokens
        return min(k, max(0, self.max_model_len - len(req.all_token_ids) - num_draft - 1)) if k else 0

    def _admit(self, budget: int, chosen: list) -> int:
        """Admit waiting requests in order while budget, seats and memory
        last.  Admission stops at a request that shares a prefix with one
        still prefilling: it goes next, with the hit (sched/prefill_wait.py);
        letting later requests pass would spend the memory that keeps the
        shared prefix cached."""
        if not self.waiting or budget <= 0 or len(self.running) >= self.config.max_num_seqs:
            return budget   # nothing can be admitted: skip the scan of running prefills
        wait = self.config.shared_prefill_wait if self.config.enable_prefix_caching else 0
        inflight = InflightPrefills(wait, self.running, self.manager.shared_prefix_step())
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = self.waiting[0]
            first_time = req.status is Status.WAITING
            hit = self.manager.lookup(req.req_id) if self.config.enable_prefix_caching else None
            start = hit.num_tokens if hit else 0
            if inflight.should_wait(req, start):
                break
            n = req.num_tokens - start
            if n > budget:
                if not self.config.enable_chunked_prefill:
                    break
                n = budget
                # admit a long prompt only if all of it fits now: taking it a
                # chunk at a time and preempting halfway wastes its prefill
                if (self.running or chosen) and not self.manager.has_room_for(
                        req.num_tokens, req.num_encoder_tokens, self.config.max_num_batched_tokens):
                    self.stats.waiting_for_memory = True
                    break
            actions = self.manager.allocate(req.req_id, start, start + n, hit_tokens=start,
                                            lookahead=self._lookahead(req, 0))
            if actions is None:
                if not self.running and not chosen:
                    self._error(req)
                    continue
                self.stats.waiting_for_memory = True
                break
            self.waiting.popleft()
            req.status, req.num_computed = Status.RUNNING, start
            if first_time:
                req.num_cached = start
                self.stats.record_admission(req.prompt_len, hit)
            self.running.append(req)
            chosen.append((req, start, start + n, actions))
            budget -= n
            if start < req.prompt_len:
                inflight.add(req)
        return budget

    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.manager.release(req.req_id)
        req.status, req.num_computed = Status.PREEMPTED, 0
        req.num_preemptions += 1
        self.stats.num_preemptions += 1
        self.waiting.appendleft(req)

    def _error(self, req: Request) -> None:
        if req in self.running:
            self.running.remove(req)
        if req in self.waiting:
            self.waiting.remove(req)
        self._finish(req, FinishReason.ERROR)
        self._errors.append(RequestUpdate(req.req_id, (), True, FinishReason.ERROR))

    def _build_plan(self, chosen: list) -> StepPlan:
        seqs, zeros = [], []
        # compaction's copies first: a later copy may read a moved page
        copies = [PageCopy(*m) for m in self.manager.take_moves()]
        self.stats.num_pages_moved += len(copies)
        tables = self.manager.page_tables
        for req, start, end, act in chosen:
            if act is NOTHING:   # most steps: pages only, nothing else to run
                saves = runs = ()
            else:
                saves = tuple(StateSave(*x) for x in act.saves) if act.saves else ()
                runs = act.encoder_runs
                if act.copies:
                    copies += [PageCopy(*x) for x in act.copies]
                if act.zeros:
                    zeros += act.zeros
            tokens = req.all_token_ids
            known = len(tokens)
            if end > known:   # draft tokens follow the known ones
                num_draft = end - known
                ids = tuple(tokens[start:end]) + req.spec_token_ids[:num_draft]
            else:
                num_draft = 0
                ids = (tokens[start],) if end == start + 1 else tuple(tokens[start:end])
            # SeqStep's own __new__ is a Python function; building the tuple
            # directly halves the cost of the one object made per request
            seqs.append(_new_tuple(SeqStep, (req.req_id, ids, start, tables(req.req_id), end - num_draft == known,
                                             req.params, len(req.prompt_token_ids), req.images,
                                             runs, saves, num_draft)))
        finished, self._finished_ids = tuple(self._finished_ids), []
        return StepPlan(self._step, tuple(seqs), tuple(copies), tuple(zeros), finished)

    # -------------------------------------------------------------- update
    def update(self, plan: StepPlan, result: StepResult, now: float = 0.0) -> list[RequestUpdate]:
        """Apply a step's result; returns one update per request touched
        (plus requests ended with an error while scheduling)."""
        out, self._errors = self._errors, []
        sampled, requests, commit = result.sampled, self.requests, self.manager.commit
        drafts, running, stop = result.draft_tokens, Status.RUNNING, self._stop_reason
        for seq in plan.seqs:
            rid, sample, num_spec = seq.req_id, seq.sample, seq.num_spec
            req = requests.get(rid)
            if req is None or req.status is not running:
                continue   # aborted or preempted since the plan was made
            end = seq.start + len(seq.token_ids)
            new: tuple[int, ...] = tuple(sampled.get(rid, ())) if sample else ()
            if num_spec:   # inputs past the accepted drafts hold rejected state
                accepted = max(0, min(len(new) - 1, num_spec))
                end -= num_spec - accepted
                self.stats.draft_tokens += num_spec
                self.stats.accepted_tokens += accepted
            commit(rid, end)
            req.num_computed = end
            req.spec_token_ids = tuple(drafts.get(rid, ())) if drafts else ()
            reason = None
            if new:
                for i, tok in enumerate(new):
                    req.append_output(tok)
                    reason = stop(req, tok)
                    if reason is not None:
                        new = new[:i + 1]
                        break
                if req.first_token_time is None:
                    req.first_token_time = now
            if reason is not None:
                req.finish_time = now
                self.running.remove(req)
                self._finish(req, reason)
            # a NamedTuple built directly: one per request per step
            out.append(_new_tuple(RequestUpdate, (rid, new, reason is not None, reason, req.num_cached)))
        return out

    def _stop_reason(self, req: Request, tok: int) -> FinishReason | None:
        p, n_out = req.params, len(req.output_token_ids)
        if n_out >= p.min_tokens and ((tok == req.eos_token_id and not p.ignore_eos) or tok in p.stop_token_ids):
            return FinishReason.STOP
        if n_out >= p.max_tokens or len(req.all_token_ids) >= self.max_model_len:
            return FinishReason.LENGTH
        return None
