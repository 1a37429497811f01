"""Hand-built tiny plans for memory and scheduler tests (no planner needed)."""

from __future__ import annotations

from math import lcm

from jenga.memory.plan import Group, MemoryPlan
from jenga.memory.spec import LayerSpec


def tiny_plan(specs: list[tuple[LayerSpec, int, int]], num_large: int, allocator: str = "jenga",
              base: int = 4, static_share: tuple[int, ...] = ()) -> MemoryPlan:
    """specs: (spec, num_layers, page_tokens) per group; layer_page_bytes is
    page_tokens * unit bytes (one state for mamba)."""
    sizes = [pt * s.unit_bytes() * n for s, n, pt in specs]
    large = lcm(*sizes)
    groups, layer = [], 0
    for gid, ((spec, n, pt), size) in enumerate(zip(specs, sizes)):
        groups.append(Group(gid, spec, tuple(range(layer, layer + n)), pt, pt * spec.unit_bytes(),
                            large // size))
        layer += n
    return MemoryPlan(tuple(groups), large, num_large, allocator, base, static_share)


FULL = LayerSpec("full", "float32", 1, 1)          # 8 bytes per token
SLIDE8 = LayerSpec("sliding", "float32", 1, 1, window=8)
CHUNK8 = LayerSpec("chunked", "float32", 1, 1, chunk=8)
BUDGET8 = LayerSpec("budget", "float32", 1, 1, budget=8)
MAMBA = LayerSpec("mamba", "float32", conv_state=(2,), ssm_state=(6,))   # 32 bytes per state
CROSS = LayerSpec("cross", "float32", 1, 1)
VISION = LayerSpec("vision", "float32", hidden_size=2)


def manager_state(m) -> tuple:
    """Everything a failed allocation must leave as it was: every page's
    state, free lists, owners, counters, the cache index, each request's
    tables and marks, and the queued moves (heaps and version counters
    aside: stale entries are skipped, so they order nothing)."""
    pool = m.pool
    pages = tuple((list(pool.ref[g]), list(pool.key[g]), list(pool.stamp[g]), list(pool.born[g]), dict(pool.cache_map[g]))
                  for g in range(len(pool.per_large)))
    larges = (list(pool.large_group), list(pool.large_owner), list(pool.large_used), list(pool.large_cached),
              list(pool.free_large), {lp: list(s) for lp, s in pool.free_slots.items()}, list(pool.vacated))
    owners = ({o: [sorted(s) for s in sets] for o, sets in pool.owned.items()}, [dict(u) for u in pool.unit_of],
              [{u: sorted(map(str, ks)) for u, ks in units.items()} for units in pool.unit_keys])
    opened = {o: [sorted(s) for s in sets] for o, sets in pool.own_open.items()}
    counts = (list(pool.held), list(pool.idle), list(pool.n_used), list(pool.n_cached), list(pool.n_shared),
              list(pool.evictions))
    reqs = {rid: (repr(r.tables), repr(r.pending), repr(r.scratch), dict(r.hit_src), list(r.cached_upto),
                  list(r.released_upto), r.num_computed, r.alloc_end, r.num_draft, r.lookahead, dict(r.image_time),
                  r.grow_at, r.commit_at, r.hit_len, r.branch)
            for rid, r in m.reqs.items()}
    return pages, larges, owners, opened, counts, reqs, list(m.moves), list(m._step_moves), sorted(m._pins)
