"""ReqMem: what the memory manager remembers about one request.

Policies read and update it; nothing outside memory/ sees it.  `tokens` is
the scheduler's live list of prompt + output ids (shared by reference), so
block hashes extend as tokens are appended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .hashing import BlockHasher
from .types import ImageRef


@dataclass(frozen=True)
class StepActions:
    """What the runner must do for one request this step, beyond attention:
    copies (gid, src, dst) and zeros (gid, page) before the forward, state
    saves (gid, position, page) during it, images whose encoder runs."""

    copies: tuple[tuple[int, int, int], ...] = ()
    zeros: tuple[tuple[int, int], ...] = ()
    saves: tuple[tuple[int, int, int], ...] = ()
    encoder_runs: tuple[int, ...] = ()


@dataclass
class ActionLog:
    """Mutable collector the policies append to while allocating."""

    copies: list[tuple[int, int, int]] = field(default_factory=list)
    zeros: list[tuple[int, int]] = field(default_factory=list)
    saves: list[tuple[int, int, int]] = field(default_factory=list)
    encoder_runs: set[int] = field(default_factory=set)
    now: int = 0
    # pages a policy wanted but could not get and can do without (a state
    # checkpoint): (gid, use(page)); the manager retries them once the
    # step's required pages are taken, with compaction
    optional: list[tuple[int, Callable[[int], None]]] = field(default_factory=list)

    def freeze(self) -> StepActions:
        return StepActions(tuple(self.copies), tuple(self.zeros), tuple(self.saves),
                           tuple(sorted(self.encoder_runs)))


@dataclass(eq=False)
class ReqMem:
    """Per-request memory state.

    tables[g]: group g's page table (NO_PAGE = -1 for released entries).
    cached_upto[g]: table entries before this index have been offered to the
        prefix cache.  pending[g]: pages held only until the step finishes
        (checkpoint pages being written, copy sources), as (page, key|None,
        priority).  released_upto[g]: entries before it left scope.
    alloc_end: end of the tokens the last allocation made room for.
    hit_src[g]: cached recurrent state to copy into a fresh running page.
    num_draft: draft tokens at the end of the current step's range.
    lookahead: positions past the step that token groups must also cover
        (the draft model's next proposals).
    scratch[g]: {position: page} states saved after each draft token, so a
        rejected draft rolls back by adopting the state at the accepted end.
    image_time[k]: when image k's encoder state was loaded (its pages share
        this eviction time so an image is evicted whole).
    branch: a position where a recurrent-state checkpoint should be saved
        because other groups already hit that far (Marconi-style).
    shared: ends of prefixes this request shares with other live requests
        (the scheduler's hint, `MemoryManager.share_prefix`): branch points
        known before anything of them is cached, so the first request to
        pass one saves what the next needs to hit there.
    hit_len: the prefix hit this request started from; the pages a hit
        there needs stay held while the request runs (others share them).
    """

    req_id: str
    tokens: list[int]
    prompt_len: int
    images: tuple[ImageRef, ...]
    hasher: BlockHasher
    tables: list[list[int]]
    cached_upto: list[int]
    pending: list[list[tuple[int, int | None, int]]]
    released_upto: list[int]
    num_computed: int = 0
    alloc_end: int = 0
    branch: int = 0
    shared: tuple[int, ...] = ()
    hit_len: int = 0
    hit_src: dict[int, int] = field(default_factory=dict)
    num_draft: int = 0
    lookahead: int = 0
    scratch: dict[int, dict[int, int]] = field(default_factory=dict)
    image_time: dict[int, int] = field(default_factory=dict)
    table_cache: tuple | None = None
    pack: tuple[bool, ...] = ()   # per group: too small to fill a large page of its own
    grow_at: float = -1     # a step ending at or below this needs no pages
    commit_at: float = 0    # a commit below this has nothing to do

    def remap(self, moved: dict[int, dict[int, int]]) -> None:
        """Pages moved by compaction: moved[g][old] = new.  Rewrites every
        page id the request holds in those groups."""
        for g, m in moved.items():
            table = self.tables[g]
            if not m.keys().isdisjoint(table):
                table[:] = [m.get(p, p) for p in table]
                self.table_cache = None
            if self.pending[g]:   # in place, like the table: a policy may hold the list
                self.pending[g][:] = [(m.get(p, p), k, prio) for p, k, prio in self.pending[g]]
            if g in self.scratch:
                self.scratch[g] = {pos: m.get(p, p) for pos, p in self.scratch[g].items()}
            if g in self.hit_src:
                self.hit_src[g] = m.get(self.hit_src[g], self.hit_src[g])

    def hashes(self) -> list[int]:
        return self.hasher.update(self.tokens, len(self.tokens))

    def key_at(self, position: int) -> int | None:
        self.hasher.update(self.tokens, min(position, len(self.tokens)))
        return self.hasher.key_at(position)
