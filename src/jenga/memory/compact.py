"""Compaction: empty one large page by moving its small pages elsewhere.

Request-aware placement keeps a request's pages together, so a large page
returns to the pool when its request ends.  The price is stranded slots:
each request's last large page of a group is partly empty, and as requests
end in an order unrelated to where their pages sit, free slots of one group
pile up across many large pages that no other group can use.  A Mamba state
needing a whole large page, or a full-attention page, is then refused while
a few percent of the pool is free sliding-window or attention slots.

When nothing else gives group `gid` a page, `compact` picks the large page
of another group with the most free slots, moves its used and cached small
pages into free slots of the same group in other large pages, and so
returns it to the pool.  This is possible exactly when that group has at
least a large page's worth of free slots in all: the emptiest large page
has at least the average share of them, so the others hold enough to take
its pages.  Each page moves by `PagePool.move`; the caller rewrites page
tables and tells the runner to copy each moved page (`PageCopy`) before the
step's forward.

Pages taken or moved during the current step (`born == now`) never move
again in it: the step's actions (state saves, zeros, copies) may name
them, so a moved page's destination is never also a source.  Pages the
manager pins (copy sources of the step) are excluded the same way.  And no
page moves into a large page that lost pages to a move earlier in the step
(`PagePool.vacated`), so no move writes bytes another move reads: the
step's moves are independent and can run in any order
(`MemoryManager.check_step_copies` asserts it).
"""

from __future__ import annotations

from collections.abc import Container

from .pool import PagePool

Move = tuple[int, int, int]   # (group, src, dst)


def compact(pool: PagePool, gid: int, pinned: Container[tuple[int, int]] = ()) -> list[Move]:
    """Empty one large page held by a group other than `gid` (see module
    doc); returns the moves made, [] when no large page can be emptied.
    Mutates the pool: the emptied large page is free on return."""
    victim = _victim(pool, gid, pinned)
    if victim is None:
        return []
    h, lp = victim
    per = pool.per_large[h]
    srcs = [p for p in range(lp * per, lp * per + per) if pool.ref[h][p] or pool.key[h][p] is not None]
    dsts = _destinations(pool, h, lp, len(srcs))
    moves = []
    for src, dst in zip(srcs, dsts):
        pool.move(h, src, dst)
        moves.append((h, src, dst))
    assert pool.large_group[lp] is None, "compacted large page did not empty"
    return moves


def _victim(pool: PagePool, gid: int, pinned: Container[tuple[int, int]]) -> tuple[int, int] | None:
    """(group, large page) with the most free slots among groups that can
    absorb a whole large page's pages elsewhere; lowest id on ties.  Free
    slots in large pages vacated earlier in the step do not count: no page
    moves into them (a copy of the step reads them)."""
    spare = {h: pool.num_free_slots(h) for h, per in enumerate(pool.per_large)
             if h != gid and per > 1 and pool.num_free_slots(h) >= per}
    step = pool.now + 1
    for lp, slots in pool.free_slots.items():
        h = pool.large_group[lp]
        if h in spare and pool.vacated[lp] == step:
            spare[h] -= len(slots)
    able = {h for h, n in spare.items() if n >= pool.per_large[h]}
    if not able:
        return None
    best, best_free = None, 0
    for lp in sorted(pool.free_slots):
        h = pool.large_group[lp]
        n = len(pool.free_slots[lp])
        if h in able and n > best_free and pool.vacated[lp] != step and _movable(pool, h, lp, pinned):
            best, best_free = (h, lp), n
    return best


def _movable(pool: PagePool, h: int, lp: int, pinned: Container[tuple[int, int]]) -> bool:
    per, now = pool.per_large[h], pool.now
    ref, key, born = pool.ref[h], pool.key[h], pool.born[h]
    for p in range(lp * per, lp * per + per):
        if (ref[p] or key[p] is not None) and (born[p] == now or (h, p) in pinned):
            return False
    return True


def _destinations(pool: PagePool, h: int, victim: int, n: int) -> list[int]:
    """n free slots of group h outside `victim`, fullest large pages first
    (they fill up and leave the emptier ones to empty in turn)."""
    # never into a large page emptied earlier in the step: a copy reads it
    vacated, step = pool.vacated, pool.now + 1
    lps = sorted((len(s), lp) for lp, s in pool.free_slots.items()
                 if lp != victim and pool.large_group[lp] == h and vacated[lp] != step)
    out: list[int] = []
    for _, lp in lps:
        out.extend(reversed(pool.free_slots[lp][-(n - len(out)):]))
        if len(out) == n:
            return out
    raise AssertionError(f"group {h} has fewer than {n} free slots outside large page {victim}")
