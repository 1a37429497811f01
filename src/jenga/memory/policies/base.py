"""Policy: everything that differs between layer kinds, for one group.

The manager asks a group's policy, never the spec's kind:
- `grow`: take the pages needed to compute tokens [start, end);
- `out_of_scope`: table entries no future token needs (released at once);
- `cacheable`: newly complete entries and their prefix-cache keys;
- `longest_hit`: the longest valid prefix-hit length <= upper, given what
  the pool has cached (the paper's get_possible_prefix);
- `take_hit`: reference the cached pages of a hit;
- `priority`: the eviction tie-break (set_prefix_length): later tokens
  first, the same token equal in every group, one value per image;
- `needed_units` / `footprint_units`: state still needed, for utilisation
  and for `jenga plan`.
Which pages a step touches (update_last_access) follows from ref counts: a
page in use has no eviction stamp; it is stamped with the current time when
released, so pages that left scope early keep their older time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..plan import Group
from ..pool import PagePool
from ..reqstate import ActionLog, ReqMem
from ..rules import AllocatorRules
from ..spec import LayerSpec
from ..types import ImageRef

NO_PAGE = -1
Alloc = Callable[[], "int | None"]


class Policy:
    """Base class; subclasses set `kinds` and override what differs."""

    kinds: tuple[str, ...] = ()
    recurrent = False   # holds one running state, checkpointed for caching
    image_keyed = False  # holds per-image encoder state, allocated at a known size
    # pages hold consecutive token positions of the request, so hits and
    # checkpoints align to the group's page_tokens (full, sliding, chunked, budget)
    token_paged = False
    decoder_layer = True  # a layer of the decoder (vision embeddings are the encoder's output)
    # weight of the kind in the paper artifact's static partition: a group's
    # share of memory is its per-token bytes x this (kinds whose need is
    # bounded per request get half)
    static_weight = 1.0

    # ---- spec-level questions (no group needed): the model and the simulator ask these
    @staticmethod
    def first_key(spec: LayerSpec, pos: int) -> int:
        """First key position a query at `pos` of a layer of `spec` attends
        to (and so the first token a step from `pos` on still needs)."""
        return 0

    @staticmethod
    def serves(spec: LayerSpec, window: int, chunk: int) -> bool:
        """Whether a group of `spec` keeps every key a layer attending with
        (window, chunk) reads (0 = unbounded / no chunking)."""
        return True

    @staticmethod
    def step_work(spec: LayerSpec, start: int, end: int, images: tuple[ImageRef, ...],
                  encoder_runs: tuple[int, ...]) -> tuple[int, int, int]:
        """(query-key pairs attended, state bytes read, state bytes written)
        of one layer of `spec` computing positions [start, end) of a request
        with `images`, whose encoder runs for `encoder_runs` this step."""
        raise NotImplementedError

    def __init__(self, group: Group, base_tokens: int, rules: AllocatorRules, mamba_interval: int) -> None:
        self.group = group
        self.gid = group.gid
        self.P = group.page_tokens
        self.B = base_tokens
        self.rules = rules
        self.mamba_interval = mamba_interval

    def init_table(self, r: ReqMem) -> list[int]:
        return []

    def grow(self, r: ReqMem, start: int, end: int, alloc: Alloc, pool: PagePool, log: ActionLog) -> bool:
        raise NotImplementedError

    def pages_needed(self, r: ReqMem, start: int, end: int, hit_tokens: int, pool: PagePool) -> tuple[int, int]:
        """(required, optional): new pages `grow` takes for [start, end)
        after a hit of `hit_tokens` (vLLM's get_num_blocks_to_allocate),
        and at most how many more it may take (state checkpoints; cached
        pages it references, should an earlier group evict them first).
        Reads r (its spec and lookahead already set for the step) and the
        pool; changes nothing."""
        raise NotImplementedError

    def hit_pages_cached(self, r: ReqMem, length: int, pool: PagePool) -> int:
        """How many of the pages `take_hit` would reference for a hit of
        `length` tokens are evictable now (they turn used); changes nothing."""
        return 0

    # Thresholds let the manager skip all per-group work on most decode
    # steps: below them nothing can change (each is re-read after a change).
    def grow_threshold(self, r: ReqMem) -> float:
        """Largest end of a one-token step for which `grow` would take
        nothing (steps of several tokens always call `grow`)."""
        return -1

    def commit_threshold(self, r: ReqMem) -> float:
        """Smallest num_computed at which `commit` has something to do."""
        return 0

    def out_of_scope(self, r: ReqMem, next_pos: int) -> Iterator[int]:
        return iter(())

    def cacheable(self, r: ReqMem, num_computed: int) -> Iterator[tuple[int, int]]:
        return iter(())

    def longest_hit(self, r: ReqMem, upper: int, pool: PagePool) -> int:
        raise NotImplementedError

    def take_hit(self, r: ReqMem, length: int, pool: PagePool, log: ActionLog) -> None:
        raise NotImplementedError

    def release_touches(self, r: ReqMem) -> list[int]:
        """Positions c whose cached pages (content keyed by the prefix of c
        tokens) a likely next hit needs, already released: re-stamped when
        the request releases its pages.  Called before its counters reset;
        none by default."""
        return []

    def scope_start(self, next_pos: int) -> int | None:
        """First token still in scope when the next token is `next_pos`, for
        kinds that keep a range of tokens; None for kinds that keep states
        or images (their need is `footprint_units`)."""
        return None

    def step_units(self, start: int, end: int, encoder_tokens: int) -> int | None:
        """Units a step computing [start, end) holds, for kinds whose need
        during a step is not a token range (`scope_start` None) yet exceeds
        what they keep; None: `footprint_units` of the step's end."""
        return None

    def hit_step(self) -> int | None:
        """Granularity of the prefix hits this group can serve: a hit ends
        on a multiple of it (None: the group never serves a hit)."""
        return self.P

    def branch_step(self) -> int | None:
        """Granularity of the hits this group can serve at a branch point
        that a request computing it was told about (`ReqMem.shared`); by
        default its `hit_step`."""
        return self.hit_step()

    def priority(self, r: ReqMem, index: int) -> int:
        return 0

    def eviction_unit(self, r: ReqMem, index: int):
        """Pages published with the same unit are evicted together (the
        pages of one image); None: the page goes on its own."""
        return None

    def scope_priority(self, r: ReqMem, index: int) -> int:
        """Aligned eviction priority of table entry `index` released because
        it left scope while the request runs (smaller goes first)."""
        return self.priority(r, index)

    def release_time(self, r: ReqMem, index: int, now: int) -> int:
        """Eviction time stamped on table entry `index` when released."""
        return now

    def needed_units(self, r: ReqMem) -> int:
        raise NotImplementedError

    def total_needed_units(self, reqs: list[ReqMem]) -> int:
        """needed_units summed over `reqs` (usage() asks every step)."""
        return sum(map(self.needed_units, reqs))

    def settle(self, r: ReqMem, num_computed: int, release: Callable[..., None]) -> None:
        """The step's verified length is known: drop speculative state past
        it (recurrent kinds adopt the state saved at `num_computed`).
        Token pages past it are simply overwritten later.  Called only
        while the group holds speculative state (in r.scratch)."""

    def snapshot(self, r: ReqMem) -> tuple:
        """State to undo a failed allocation (tables only ever grow here;
        a prefix hit also moves the published and released marks).  The
        pages themselves are put back by the pool's journal."""
        g = self.gid
        return len(r.tables[g]), len(r.pending[g]), r.hit_src.get(g), r.cached_upto[g], r.released_upto[g]

    def restore(self, r: ReqMem, snap: tuple, release: Callable[[int, int], None]) -> None:
        """Undo everything taken since `snap`; release(index, page) drops
        one reference (index -1 for pending pages); the manager passes a
        no-op while the pool's journal undoes the references itself."""
        n_table, n_pending, src, r.cached_upto[self.gid], r.released_upto[self.gid] = snap
        table, pending = r.tables[self.gid], r.pending[self.gid]
        for i in range(len(table) - 1, n_table - 1, -1):
            if table[i] != NO_PAGE:
                release(i, table[i])
        del table[n_table:]
        for page, _, _ in pending[n_pending:]:
            release(-1, page)
        del pending[n_pending:]
        if src is None:
            r.hit_src.pop(self.gid, None)

    def footprint_units(self, context: int, encoder_tokens: int) -> int:
        """Units (tokens or states) a request of `context` tokens with
        `encoder_tokens` image tokens keeps at its end, ideally."""
        raise NotImplementedError

    def footprint_pages(self, context: int, encoder_tokens: int) -> int:
        """Small pages the same request holds at its end under this policy."""
        raise NotImplementedError

    def peak_pages(self, context: int, encoder_tokens: int, chunk: int) -> int:
        """Most small pages the request holds at once when its tokens are
        computed `chunk` at a time (a step keeps every token it computes)."""
        return self.footprint_pages(context, encoder_tokens)
