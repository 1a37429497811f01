"""MemoryManager: the memory side of the engine, in page ids and token counts.

It registers requests, finds prefix hits valid for every group, takes the
pages a step needs (all or nothing), publishes full pages to the prefix
cache after a step, releases pages that fell out of scope at once, and frees
a request's pages when it ends or is preempted.  All kind-specific logic is
in the groups' policies; all page state is in the PagePool.

Time is a logical clock the scheduler advances once per step (`tick`).
Released pages are stamped `(time, priority)`; with aligned eviction the
priority is the token position (later first, equal across groups), with the
baselines' unaligned eviction it is the release order.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import lcm

from . import capacity, step_copies
from .checkpoint_interval import default_mamba_interval
from .compact import compact
from .hashing import BlockHasher
from .observe import MemoryObserver
from .plan import MemoryPlan
from .policies import NO_PAGE, policy_for
from .pool import PagePool
from .reqstate import ActionLog, ReqMem, StepActions
from .rules import AllocatorRules
from .types import ImageRef, PrefixHit
from .usage import MemoryUsage

NOTHING = StepActions()
INF = float("inf")
MAX_SHARED = 4   # shared-prefix branch points kept per request


def _keep(index: int, page: int) -> None:
    """Release callback of a failed attempt: the pool's journal puts the
    references back, so nothing is released page by page."""


def _by_group(moves) -> dict[int, dict[int, int]]:
    moved: dict[int, dict[int, int]] = {}
    for h, src, dst in moves:
        moved.setdefault(h, {})[src] = dst
    return moved


class MemoryManager:
    """Pages for requests under one MemoryPlan (see module doc)."""

    def __init__(self, plan: MemoryPlan, *, enable_prefix_caching: bool = True,
                 mamba_interval: int | None = None) -> None:
        if mamba_interval is None:   # "auto": checkpoints that cost no more than the K/V they cover
            mamba_interval = default_mamba_interval(plan)
        if mamba_interval <= 0:
            raise ValueError(f"mamba_interval must be > 0 or None (auto), got {mamba_interval}")
        self.mamba_interval = mamba_interval
        self.plan = plan
        self.rules = AllocatorRules.for_plan(plan)
        self.pool = PagePool(plan, self.rules)
        self.caching = enable_prefix_caching
        self.policies = [policy_for(g.kind)(g, plan.base_page_tokens, self.rules, mamba_interval)
                         for g in plan.groups]
        token_pages = [g.page_tokens for p, g in zip(self.policies, plan.groups) if p.token_paged]
        self.align = lcm(plan.base_page_tokens, *token_pages)
        for p in self.policies:
            p.align = self.align
        self.reqs: dict[str, ReqMem] = {}
        self._observers: tuple[MemoryObserver, ...] = ()
        # req_id -> (pool generation, tokens known, hit, branch): a lookup
        # is a function of the cache index and the request's tokens only
        self._lookups: dict[str, tuple[int, int, PrefixHit, int | None]] = {}
        self.clock = 0
        self._order = 0
        self.moves: list[tuple[int, int, int]] = []   # compaction's copies for the runner
        self._pins: set[tuple[int, int]] = set()       # copy sources of this step
        # this step's copies, for check_step_copies: compaction's moves, and
        # per request the (copies, zeros) of its allocations
        self._step_moves: list[tuple[int, int, int]] = []
        self._step_actions: dict[str, list[tuple[tuple, tuple]]] = {}

    def subscribe(self, observer: MemoryObserver) -> None:
        """Call `observer`'s hooks after every add, release, remove,
        allocate and has_room_for (memory/observe.py)."""
        self._observers += (observer,)

    # ---------------------------------------------------------- lifecycle
    def tick(self) -> None:
        """Advance the logical clock (once per step)."""
        self.clock += 1
        self.pool.now = self.clock
        self._pins.clear()
        self._step_moves = []
        self._step_actions = {}

    def add(self, req_id: str, tokens: list[int], prompt_len: int, images: Sequence[ImageRef] = (),
            salt: str = "", model: str = "main") -> None:
        """Register a request.  `tokens` is the live prompt+output list."""
        if req_id in self.reqs:
            raise ValueError(f"request id {req_id!r} is already registered")
        hasher = BlockHasher(self.plan.base_page_tokens, images, salt, model)
        n = len(self.policies)
        r = ReqMem(req_id, tokens, prompt_len, tuple(images), hasher, [[] for _ in range(n)],
                   [0] * n, [[] for _ in range(n)], [0] * n)
        r.tables = [p.init_table(r) for p in self.policies]
        enc = sum(img.num_tokens for img in images)
        r.pack = tuple(p.footprint_pages(len(tokens), enc) < g.per_large
                       for p, g in zip(self.policies, self.plan.groups))
        self.reqs[req_id] = r
        for o in self._observers:
            o.added(req_id, tokens, prompt_len, images, salt, model)

    def release(self, req_id: str) -> None:
        """Drop every page the request holds (end or preemption); cached
        content stays evictable.  The request stays registered."""
        r, release, stamp = self.reqs[req_id], self.pool.release, self._stamp
        self._step_actions.pop(req_id, None)   # its copies will not run
        for p in self.policies:
            gid = p.gid
            table = r.tables[gid]
            for i in range(len(table) - 1, -1, -1):
                if table[i] != NO_PAGE:
                    release(gid, table[i], stamp(p, r, i))
            for page, key, prio in r.pending[gid]:
                release(gid, page, self._stamp_prio(prio))
            r.pending[gid] = []
            for page in r.scratch.pop(gid, {}).values():
                release(gid, page, self._stamp_prio(0))
            self._touch_prompt_end(p, r, table)
            r.cached_upto[gid] = r.released_upto[gid] = 0
        r.tables = [p.init_table(r) for p in self.policies]
        r.hit_src.clear()
        r.num_computed = r.alloc_end = r.branch = r.hit_len = 0
        self._refresh(r)
        self.pool.drop_owner(req_id)
        for o in self._observers:
            o.released(req_id)

    def _touch_prompt_end(self, p, r: ReqMem, table: list[int]) -> None:
        """Cached pages a likely next hit needs (`Policy.release_touches`:
        a window at the prompt's end, a recurrent checkpoint), released
        earlier, count as used until now: otherwise they are evicted before
        the rest of the prompt and that hit (a shared document, a few-shot
        prefix, the request's own recomputation after a preemption) dies in
        one group while every other group still holds it."""
        if not self.caching:
            return
        for c in p.release_touches(r):
            page = self.pool.lookup(p.gid, r.key_at(c))
            if page is not None:
                self.pool.touch(p.gid, page, self._stamp_prio(-c))

    def remove(self, req_id: str) -> None:
        """Release the request's pages and forget it."""
        self.release(req_id)
        del self.reqs[req_id]
        self._lookups.pop(req_id, None)
        for o in self._observers:
            o.removed(req_id)

    # ------------------------------------------------------------- prefix
    def lookup(self, req_id: str) -> PrefixHit:
        """Longest prefix of the request's known tokens cached in every group
        (at most all but the last token, which must be computed).  May set
        the request's branch point.  A request looked up again before any
        key entered or left the cache, with no new tokens, gets the same
        answer without a scan (a waiting request is looked up every step)."""
        n = len(self.policies)
        if not self.caching:
            return PrefixHit(0, (0,) * n)
        r = self.reqs[req_id]
        memo = self._lookups.get(req_id)
        if memo is None or memo[0] != self.pool.generation or memo[1] != len(r.tokens):
            memo = (self.pool.generation, len(r.tokens)) + self._scan(r)
            self._lookups[req_id] = memo
        if memo[3] is not None:
            r.branch = memo[3]
        return memo[2]

    def _scan(self, r: ReqMem) -> tuple[PrefixHit, int | None]:
        """The hit, and the branch point to record (None: leave it)."""
        upper = len(r.tokens) - 1
        per_group = tuple(p.longest_hit(r, upper, self.pool) for p in self.policies)
        hit = self._agree(r, min(per_group, default=0), self.policies)
        branch = None
        if self.rules.mamba_checkpoints == "jenga":
            others = [p for p in self.policies if not p.recurrent]
            if len(others) < len(self.policies):
                free_run = self._agree(r, upper, others)
                branch = free_run if free_run > hit else 0
            elif self.rules.aligned:
                # a group holds more than all agree on: a prefix others share
                # ends there (Marconi's branch point); this request keeps the
                # window before it so the next one hits it in every group
                longest = max(per_group, default=0)
                branch = longest if longest > hit else 0
        return PrefixHit(hit, per_group), branch

    def hit_granularity(self) -> int | None:
        """Hits end on multiples of this many tokens (every group must serve
        them); None when prefix caching is off or some group never hits."""
        steps = [p.hit_step() for p in self.policies] if self.caching else [None]
        return None if None in steps else lcm(*steps)

    def shared_prefix_step(self) -> int | None:
        """Shared prefixes are rounded down to multiples of this many tokens
        before `share_prefix`, where every group can serve a hit once one
        request has computed them (a recurrent group saves a state at a
        branch point it is told of); None when nothing can be served."""
        steps = [p.branch_step() for p in self.policies] if self.caching else [None]
        return None if None in steps else lcm(*steps)

    def share_prefix(self, req_id: str, length: int) -> None:
        """The request's first `length` tokens (a multiple of
        `shared_prefix_step`) are also another live request's: keep there
        what a hit needs (a recurrent state, the sliding windows before it)
        when this request computes it first.  At most `MAX_SHARED` such
        points are kept, the longest."""
        r = self.reqs[req_id]
        if length <= 0 or length in r.shared or not self.caching:
            return
        r.shared = tuple(sorted(r.shared + (length,))[-MAX_SHARED:])
        self._refresh(r, False)

    def _agree(self, r: ReqMem, length: int, policies) -> int:
        """Largest length <= `length` valid for every policy given."""
        while True:
            new = length
            for p in policies:
                new = min(new, p.longest_hit(r, new, self.pool))
            if new == length:
                return length
            length = new

    # --------------------------------------------------------- allocation
    def allocate(self, req_id: str, start: int, end: int, hit_tokens: int = 0, num_draft: int = 0,
                 lookahead: int = 0) -> StepActions | None:
        """`_allocate`, then the observers hear of it."""
        actions = self._allocate(req_id, start, end, hit_tokens, num_draft, lookahead)
        if self._observers:
            for o in self._observers:
                o.allocated(req_id, start, end, hit_tokens, actions)
        return actions

    def _allocate(self, req_id: str, start: int, end: int, hit_tokens: int = 0, num_draft: int = 0,
                  lookahead: int = 0) -> StepActions | None:
        """Make room to compute tokens [start, end).  On a request's first
        allocation `hit_tokens` (== start) cached tokens are taken from the
        prefix cache.  With speculative decoding the last `num_draft` tokens of
        the range are draft proposals (recurrent groups keep a state after
        each, to roll back to), and `lookahead` more positions get pages for
        the draft model's next proposals.

        All or nothing, and a failure has no side effect: it returns None
        with the pool, every request's page ids and the queued moves as
        they were (no page taken, no cached page evicted, nothing
        compacted).  The pages each group needs are counted first
        (`Policy.pages_needed`); when the pool could not hold them even
        with every cached page evicted (`capacity.could_hold`) it refuses
        without touching anything.  Otherwise it takes them, evicting and
        compacting as needed, under the pool's undo journal
        (memory/pool_journal.py) unless the free large pages alone surely
        hold them (`capacity.surely_holds`)."""
        r = self.reqs[req_id]
        if end <= r.grow_at and end == start + 1 and not num_draft and not hit_tokens and 0 <= start <= len(r.tokens):
            # the common decode step: no group crosses a page boundary
            # (a step of several tokens always asks the policies)
            r.num_draft, r.lookahead, r.alloc_end = 0, lookahead, end
            return NOTHING
        if not 0 <= start < end <= len(r.tokens) + 1 + num_draft or not 0 <= num_draft < end - start + 1:
            raise ValueError(f"bad token range [{start}, {end}) (num_draft={num_draft}) for request {req_id!r}")
        if hit_tokens and (hit_tokens != start or self.holds_pages(req_id)):
            raise ValueError("a prefix hit can only start a request's first allocation")
        before = r.num_draft, r.lookahead
        r.num_draft, r.lookahead = num_draft, lookahead
        pool = self.pool
        needs = [p.pages_needed(r, start, end, hit_tokens, pool) for p in self.policies]
        revived = [p.hit_pages_cached(r, hit_tokens, pool) for p in self.policies] if hit_tokens else None
        # optional pages may also be cached ones that turn used
        sure = capacity.surely_holds(self.plan, pool, [n + opt for n, opt in needs],
                                     sum(revived or ()) + sum(opt for _, opt in needs))
        if not sure and not capacity.could_hold(self.plan, pool, [n + v for (n, _), v in
                                                                  zip(needs, revived or [0] * len(needs))]):
            r.num_draft, r.lookahead = before
            return None
        log = self._take_pages(r, start, end, hit_tokens, undo=not sure)
        if log is None:
            r.num_draft, r.lookahead = before
            return None
        for gid, use in log.optional:
            page = self.pool.allocate(gid, req_id, r.pack[gid])
            while page is None and self.rules.compaction and self._compact(gid):
                page = self.pool.allocate(gid, req_id, r.pack[gid])
            if page is not None:
                use(page)
        if self.plan.vision_outside_pool:
            log.encoder_runs.update(k for k, img in enumerate(r.images) if img.position < end and img.end > start)
        if hit_tokens:
            r.hit_len = hit_tokens
        r.alloc_end = end
        self._refresh(r)
        if log.copies or log.zeros:
            self._step_actions.setdefault(req_id, []).append((tuple(log.copies), tuple(log.zeros)))
        if log.copies or log.zeros or log.saves or log.encoder_runs:
            return log.freeze()
        return NOTHING   # a new page and nothing else for the runner to do

    def _take_pages(self, r: ReqMem, start: int, end: int, hit_tokens: int, undo: bool) -> ActionLog | None:
        """The required pages of `allocate`, compacting when a group finds
        none: the step's actions, or None with everything undone (`undo`:
        under the pool's journal; without it the caller has proven the
        pages are free, and a failure is a bug)."""
        if not undo:
            log = self._grow(r, start, end, hit_tokens)
            assert not isinstance(log, int), f"group {log} found no page although the count said it would"
            return log
        pool, n_moves = self.pool, len(self.moves)
        pool.begin()   # the whole allocation: compaction's moves included
        while True:
            pool.begin()   # one attempt
            log = self._grow(r, start, end, hit_tokens)
            if not isinstance(log, int):
                pool.commit()
                pool.commit()
                return log
            pool.rollback()
            if not (self.rules.compaction and self._compact(log)):
                pool.rollback()
                self._unmove(n_moves)
                return None

    def _grow(self, r: ReqMem, start: int, end: int, hit_tokens: int) -> ActionLog | int:
        """One attempt of `allocate`: the step's actions, or the id of the
        group that found no page (the request's tables restored; the
        caller's journal puts the pages back)."""
        log = ActionLog(now=self.clock)
        snaps = [p.snapshot(r) for p in self.policies]
        old = r.num_computed
        if hit_tokens:
            for p in self.policies:
                p.take_hit(r, hit_tokens, self.pool, log)
            r.num_computed = hit_tokens
        pool, pack, req_id = self.pool, r.pack, r.req_id
        for p in self.policies:
            if not p.grow(r, start, end, lambda g=p.gid: pool.allocate(g, req_id, pack[g]), pool, log):
                for q, snap in zip(self.policies, snaps):
                    q.restore(r, snap, _keep)
                r.num_computed = old
                return p.gid
        for gid, src, _dst in log.copies:
            self._pins.add((gid, src))   # the runner reads it this step: it must stay put
        return log

    def _compact(self, gid: int) -> bool:
        """Free a large page for group gid by moving another group's pages
        (memory/compact.py); rewrites every holder's page ids and queues the
        copies for the runner.  Returns False when nothing can move."""
        moves = compact(self.pool, gid, self._pins)
        if not moves:
            return False
        self._remap({h: {src: dst} for h, src, dst in moves} if len(moves) == 1 else _by_group(moves))
        self.moves += moves
        self._step_moves += moves
        return True

    def _unmove(self, n_moves: int) -> None:
        """Undo the page-id rewrites of the moves queued after the first
        `n_moves` (the pool's journal has put the pages back): no page is
        both moved into and out of in one step, so one inverse map does."""
        undone = self.moves[n_moves:]
        if not undone:
            return
        del self.moves[n_moves:]
        del self._step_moves[len(self._step_moves) - len(undone):]
        self._remap(_by_group([(h, dst, src) for h, src, dst in undone]))

    def _remap(self, moved: dict[int, dict[int, int]]) -> None:
        for r in self.reqs.values():
            r.remap(moved)

    def take_moves(self) -> list[tuple[int, int, int]]:
        """Page copies (gid, src, dst) that compaction made since the last
        call; the runner must apply them before the step's forward, ahead
        of the step's other copies (memory/step_copies.py says why that
        order is safe, and this call asserts it).  Clears the queue."""
        if self._step_moves or self._step_actions:
            self.check_step_copies()
        out, self.moves = self.moves, []
        return out

    def check_step_copies(self) -> None:
        """Raise AssertionError unless this step's moves are independent of
        each other, and so are its other copies and zeros
        (memory/step_copies.py)."""
        step_copies.check_step(self.plan, self._step_moves,
                               (a for acts in self._step_actions.values() for a in acts))

    def commit(self, req_id: str, num_computed: int) -> None:
        """The step ran: `num_computed` tokens are now in the pool.  Publish
        complete pages and checkpoints to the cache, drop pages held for the
        step only, and release pages no future token needs."""
        r = self.reqs[req_id]
        if self._step_actions:
            self._step_actions.pop(req_id, None)   # its copies have run
        if num_computed < r.commit_at:   # also -inf while pages are pending
            r.num_computed = num_computed
            return
        pool, caching, changed = self.pool, self.caching, False
        for p in self.policies:
            gid, pending = p.gid, r.pending[p.gid]
            if num_computed < p.commit_threshold(r) and not pending and gid not in r.scratch:
                continue   # nothing for this group (others may have work)
            table = r.tables[gid]
            if gid in r.scratch:
                p.settle(r, num_computed, lambda page, prio=0, g=gid: pool.release(g, page, self._stamp_prio(prio)))
                changed = True   # a recurrent group may adopt a draft's state page
            for i, key in p.cacheable(r, num_computed):
                if caching:
                    pool.set_key(gid, table[i], key, p.eviction_unit(r, i))
            if pending:
                for page, key, prio in pending:
                    if key is not None and caching:
                        pool.set_key(gid, page, key)
                    pool.release(gid, page, self._stamp_prio(prio))
                r.pending[gid] = []
            for i in p.out_of_scope(r, num_computed):
                pool.release(gid, table[i], self._stamp_prio(p.scope_priority(r, i)))
                table[i] = NO_PAGE
                changed = True
        r.num_computed = num_computed
        self._refresh(r, changed)

    def _refresh(self, r: ReqMem, tables_changed: bool = True) -> None:
        """The request's pages changed: re-read the thresholds, and drop
        the cached page tables if an entry changed (a commit that only
        publishes pages leaves them as they were).  Every change to a
        request's pages ends here (a failed allocation restores the state
        of the last call), so the fast paths of `allocate` and `commit`
        need only compare with the thresholds."""
        if tables_changed:
            r.table_cache = None
        grow_at = commit_at = INF
        for p in self.policies:
            g, c = p.grow_threshold(r), p.commit_threshold(r)
            if g < grow_at:
                grow_at = g
            if c < commit_at:
                commit_at = c
        if self.plan.vision_outside_pool and r.images:
            grow_at = -INF   # the encoder reruns for every chunk: always allocate
        if r.scratch or any(r.pending):
            commit_at = -INF
        r.grow_at, r.commit_at = grow_at, commit_at

    def _stamp(self, p, r: ReqMem, index: int) -> tuple[int, int]:
        return p.release_time(r, index, self.clock), self._prio(p.priority(r, index))

    def _stamp_prio(self, prio: int) -> tuple[int, int]:
        return self.clock, self._prio(prio)

    def _prio(self, aligned_prio: int) -> int:
        if self.rules.aligned:
            return aligned_prio
        self._order += 1
        return self._order

    # ------------------------------------------------------------ queries
    def page_tables(self, req_id: str) -> tuple[tuple[int, ...], ...]:
        """The request's page table per group (cached until it changes)."""
        r = self.reqs[req_id]
        if r.table_cache is None:
            r.table_cache = tuple(map(tuple, r.tables))
        return r.table_cache

    def holds_pages(self, req_id: str) -> bool:
        r = self.reqs[req_id]
        return any(p != NO_PAGE for t in r.tables for p in t) or any(r.pending) or bool(r.scratch)

    def fits_alone(self, num_tokens: int, encoder_tokens: int, chunk: int | None = None) -> bool:
        """Whether such a request fits the pool with nothing else (capacity.py)."""
        return capacity.fits_alone(self.policies, self.plan, num_tokens, encoder_tokens, chunk)

    def has_room_for(self, num_tokens: int, encoder_tokens: int, chunk: int | None = None) -> bool:
        """Whether the pool could hold such a request now (capacity.py)."""
        room = capacity.has_room_for(self.policies, self.plan, self.pool, self.rules, num_tokens,
                                     encoder_tokens, chunk)
        for o in self._observers:
            o.room_checked(num_tokens, encoder_tokens, chunk, room)
        return room

    def usage(self) -> MemoryUsage:
        """Bytes used, cached, free and still needed (capacity.py)."""
        return capacity.usage(self.policies, self.plan, self.pool, [r for r in self.reqs.values() if r.alloc_end])

    def reset_prefix_cache(self) -> int:
        """Drop all cached content not in use; returns pages dropped."""
        return self.pool.evict_all()

    def check_invariants(self) -> None:
        """Raise AssertionError if any page is double-owned, leaked or
        miscounted (see PagePool.check_invariants)."""
        refs: list[dict[int, int]] = [{} for _ in self.policies]
        for r in self.reqs.values():
            for g, table in enumerate(r.tables):
                for page in table:
                    if page != NO_PAGE:
                        refs[g][page] = refs[g].get(page, 0) + 1
                for page, _, _ in r.pending[g]:
                    refs[g][page] = refs[g].get(page, 0) + 1
                for page in r.scratch.get(g, {}).values():
                    refs[g][page] = refs[g].get(page, 0) + 1
        self.pool.check_invariants(refs)
        self.check_step_copies()
