"""What one request costs under a plan: the numbers behind `jenga plan`.

`ideal_bytes` counts only state a request of `context` tokens (with
`image_tokens` encoder tokens) really needs at its peak, layer by layer, as
the policies define it: every token for full attention, the window for
sliding, the current chunk for chunked, one state for Mamba, the image for
cross-attention and vision.  `request_footprint` counts the bytes a plan's
allocator actually holds for that request (whole small pages, padding, and
the baselines' extra tokens), and `max_concurrent` how many such requests
fit in the pool at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .plan import MemoryPlan
from .policies import policy_for
from .rules import AllocatorRules


@dataclass(frozen=True)
class GroupFootprint:
    gid: int
    label: str
    pages: int
    allocated_bytes: int


@dataclass(frozen=True)
class Footprint:
    """One request under one plan: bytes held, bytes needed, the waste
    between them, and how many such requests fit in the pool."""

    allocator: str
    allocated_bytes: int
    ideal_bytes: int
    max_concurrent: int
    per_group: tuple[GroupFootprint, ...]

    @property
    def waste(self) -> float:
        return 1.0 - self.ideal_bytes / self.allocated_bytes if self.allocated_bytes else 0.0


def _policies(plan: MemoryPlan):
    rules = AllocatorRules.for_plan(plan)
    return [policy_for(g.kind)(g, plan.base_page_tokens, rules, 512) for g in plan.groups]


def ideal_bytes(jenga_plan: MemoryPlan, context: int, image_tokens: int) -> int:
    """Bytes of state the request needs; `jenga_plan` must group layers by
    their true specs (any allocator but max-page)."""
    total = 0
    for p, g in zip(_policies(jenga_plan), jenga_plan.groups):
        total += p.footprint_units(context, image_tokens) * g.spec.unit_bytes() * len(g.layers)
    return total


def request_footprint(plan: MemoryPlan, context: int, image_tokens: int, ideal: int) -> Footprint:
    """Pages and bytes `plan` holds for one request; see module doc."""
    pages = [p.footprint_pages(context, image_tokens) for p in _policies(plan)]
    per_group = tuple(GroupFootprint(g.gid, g.spec.describe(), n, n * g.small_page_bytes)
                      for g, n in zip(plan.groups, pages))
    return Footprint(plan.allocator, sum(x.allocated_bytes for x in per_group), ideal,
                     max_concurrent(plan, pages), per_group)


def max_concurrent(plan: MemoryPlan, pages: list[int]) -> int:
    """Most requests needing `pages[g]` small pages of each group that fit
    together (static: each group within its share)."""
    def fits(k: int) -> bool:
        if plan.static_share:
            return all(-(-k * n // g.per_large) <= s for g, n, s in zip(plan.groups, pages, plan.static_share))
        return sum(-(-k * n // g.per_large) for g, n in zip(plan.groups, pages)) <= plan.num_large_pages

    lo, hi = 0, max(1, plan.num_large_pages * max(g.per_large for g in plan.groups))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def workload_static_share(jenga_plan: MemoryPlan, requests: list[tuple[int, int]]) -> list[float]:
    """Static-partition weights per group of `jenga_plan` from a workload:
    the mean bytes its requests (context, image tokens) need in each group.
    This is the "profiled" static split: right on average, wrong for any
    request that strays from the average."""
    if not requests:
        raise ValueError("workload_static_share needs at least one request")
    weights = [0.0] * len(jenga_plan.groups)
    for p, g in zip(_policies(jenga_plan), jenga_plan.groups):
        unit = g.spec.unit_bytes() * len(g.layers)
        weights[g.gid] = sum(p.footprint_units(c, i) for c, i in requests) * unit / len(requests)
    return weights
