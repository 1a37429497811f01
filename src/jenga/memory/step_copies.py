"""Why a step's page copies are safe to run, and the check that says so.

Before a step's forward the runner copies pages in two phases: compaction's
moves (`MemoryManager.take_moves`), then the step's own copies and zeros (a
Mamba hit's checkpoint copied into a fresh running page, a fresh state
zeroed).  Each phase is *independent*: no copy in it writes bytes another
copy of the same phase reads or writes, so its copies can run in any order
(or all at once).  Across phases the order matters and is fixed: a phase-2
copy may read a page a move has just written (a cached checkpoint that was
moved, then hit), and a phase-2 write may land in a large page a move has
just emptied.

Why the phases are independent (memory/compact.py, memory/manager.py):
- a move reads a used or cached page of a large page with no page taken or
  moved in this step, and writes a free slot of a large page that no move
  of the step has emptied, so reads and writes never meet;
- a phase-2 copy reads a cached page it holds a reference to (pinned: it
  never moves) and writes a page taken in this step; zeros write pages
  taken in this step; a page in use is never also free, so they never meet.

`check_step` asserts this in bytes (pages of different groups share large
pages over a step), so a change that breaks the argument fails loudly.
"""

from __future__ import annotations

from collections.abc import Iterable

from .plan import MemoryPlan

Range = tuple[int, int, int]   # (large page, first byte, end byte)


def byte_range(plan: MemoryPlan, gid: int, page: int) -> Range:
    g = plan.groups[gid]
    lp, slot = divmod(page, g.per_large)
    size = plan.large_page_bytes // g.per_large
    return lp, slot * size, (slot + 1) * size


def check_phase(plan: MemoryPlan, reads: Iterable[tuple[int, int]], writes: Iterable[tuple[int, int]],
                what: str) -> None:
    """Assert that no (gid, page) written overlaps, in bytes, one read or
    another one written."""
    by_large: dict[int, list[tuple[int, int, bool]]] = {}
    for pages, written in ((writes, True), (reads, False)):
        for g, p in pages:
            lp, lo, hi = byte_range(plan, g, p)
            by_large.setdefault(lp, []).append((lo, hi, written))
    for lp, spans in by_large.items():
        spans.sort()
        for i, (lo1, hi1, w1) in enumerate(spans):
            for lo2, hi2, w2 in spans[i + 1:]:
                if lo2 >= hi1:
                    break
                assert not (w1 or w2), \
                    f"{what}: a page is written where another copy of the phase reads or writes (large page {lp})"


def check_step(plan: MemoryPlan, moves: list[tuple[int, int, int]], actions: Iterable[tuple[tuple, tuple]]) -> None:
    """Assert both phases of one step independent (module doc)."""
    if moves:
        check_phase(plan, [(g, s) for g, s, _ in moves], [(g, d) for g, _, d in moves], "compaction moves")
    reads, writes = [], []
    for copies, zeros in actions:
        reads += [(g, s) for g, s, _ in copies]
        writes += [(g, d) for g, _, d in copies]
        writes += zeros
    if writes:
        check_phase(plan, reads, writes, "step copies and zeros")
