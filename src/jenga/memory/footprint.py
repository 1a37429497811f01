"""What requests cost under a plan: the numbers behind `jenga plan` and the
yardstick of every utilisation measurement.

`TrueNeed` is that yardstick: the bytes each group's layers really need,
token by token, as the jenga plan's policies define scope (every token for
full attention, the window for sliding, the current chunk for chunked, one
state for Mamba, the image tokens for cross-attention and vision, the
budget for a token-budget layer), whatever
allocator holds them.  `ideal_bytes` is its total for one request at its
end, `true_need_bytes` for a set of running requests.  `request_footprint`
counts the bytes a plan's allocator actually holds for one request (whole
small pages, padding, the baselines' extra tokens), `max_concurrent`
how many such requests fit in the pool at once, and `longest_request` the
longest single request the pool admits (the paper's Table 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from .capacity import fits_alone
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


class TrueNeed:
    """Bytes of state per group of `ref_plan` that layers need, token
    granular (no page rounding).  `ref_plan` must group layers by their true
    specs (any allocator but max-page; ValueError otherwise).  Encoder
    tokens count whole: exact for cross-attention, an upper bound for
    vision embeddings, which are dropped as their tokens prefill."""

    def __init__(self, ref_plan: MemoryPlan) -> None:
        if any(g.holds_encoder_tokens for g in ref_plan.groups):
            raise ValueError("ref_plan must group layers by their true specs (a max-page plan does not)")
        self.plan = ref_plan
        self.policies = _policies(ref_plan)
        self.unit = [g.spec.unit_bytes() * len(g.layers) for g in ref_plan.groups]

    def kept(self, context: int, encoder_tokens: int) -> tuple[int, ...]:
        """Per group: state a request keeps once `context` tokens are
        computed (sliding: the last window; Mamba: one state)."""
        return tuple(p.footprint_units(context, encoder_tokens) * u for p, u in zip(self.policies, self.unit))

    def step(self, start: int, end: int, encoder_tokens: int) -> tuple[int, ...]:
        """Per group: state a step computing tokens [start, end) reads or
        writes, which is what it keeps plus, for token groups, the step's
        own tokens that leave scope when it ends (a sliding layer's chunk
        past its window: the step writes every token before attending).
        Equals `kept(end, ...)` for a one-token decode."""
        if not 0 <= start < end:
            raise ValueError(f"bad step range [{start}, {end})")
        # a step's scope reaches from the scope of its first token to its end
        lows = self.scope_start(start, end, True)
        out = []
        for p, k, u, lo in zip(self.policies, self.kept(end, encoder_tokens), self.unit, lows):
            held = p.step_units(start, end, encoder_tokens) if lo is None else end - lo
            out.append(k if held is None else max(k, held * u))
        return tuple(out)

    def rounded(self, start: int, end: int, encoder_tokens: int, current: bool) -> tuple[int, ...]:
        """Per group: `step(start, end, ...)` (current) or `kept(end, ...)`
        (not) rounded up to whole small pages of `ref_plan`, counted from
        the page holding the scope's first token: what a perfect allocator
        with these pages holds."""
        out = []
        for p, g, lo in zip(self.policies, self.plan.groups, self.scope_start(start, end, current)):
            held = p.step_units(start, end, encoder_tokens) if current and lo is None else None
            if lo is not None:   # the pages from the one holding the scope's first token
                pages = -(-end // p.P) - lo // p.P
            elif held is not None:   # a step's slots, whatever their positions
                pages = max(-(-held // p.P), p.footprint_pages(end, encoder_tokens))
            else:
                pages = p.footprint_pages(end, encoder_tokens)
            out.append(pages * g.small_page_bytes)
        return tuple(out)

    def scope_start(self, start: int, end: int, current: bool) -> tuple[int | None, ...]:
        """Per group: the first token whose state `step(start, end)`
        (current) or `kept(end)` (not) counts, up to `end`; None for groups
        that keep states or images rather than a token range."""
        return tuple(p.scope_start(start if current else end) for p in self.policies)

    def prefill_peak(self, num_tokens: int, encoder_tokens: int, chunk: int, rounded: bool = False) -> tuple[int, ...]:
        """Per group: the most `step` (or, `rounded`, its whole pages) needs
        while `num_tokens` tokens are computed `chunk` at a time from 0
        (what admitting a prompt asks for)."""
        if num_tokens <= 0 or chunk <= 0:
            raise ValueError(f"num_tokens and chunk must be > 0, got {num_tokens}, {chunk}")
        peak = [0] * len(self.unit)
        for start in range(0, num_tokens, chunk):
            end = min(start + chunk, num_tokens)
            part = self.rounded(start, end, encoder_tokens, True) if rounded else self.step(start, end, encoder_tokens)
            for g, b in enumerate(part):
                peak[g] = max(peak[g], b)
        return tuple(peak)


def ideal_bytes(jenga_plan: MemoryPlan, context: int, image_tokens: int) -> int:
    """Bytes of state a request of `context` tokens keeps at its end (see
    TrueNeed; `jenga_plan` must not be max-page)."""
    return sum(TrueNeed(jenga_plan).kept(context, image_tokens))


def true_need_bytes(ref_plan: MemoryPlan, running) -> int:
    """Bytes of state the `running` requests' layers need now, by
    `ref_plan`'s policies, whatever allocator holds them.  `running`: objects
    with `num_computed` and `images` (the scheduler's requests), measured
    between steps, when each keeps what its computed tokens leave in scope."""
    need = TrueNeed(ref_plan)
    return sum(sum(need.kept(r.num_computed, sum(i.num_tokens for i in r.images))) for r in running)


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


# lengths beyond this count as unbounded (a model whose every group keeps a
# bounded scope: sliding, chunked and Mamba layers only)
UNBOUNDED = 1 << 50


def longest_request(plan: MemoryPlan, encoder_tokens: int = 0, chunk: int = 2048) -> int | None:
    """Most tokens (prompt + output) one request may have and still be
    admitted to an empty pool, prefilled `chunk` tokens a step: the largest
    n with `capacity.fits_alone(n)`, the scheduler's own admission test
    (each group at its peak, plus one page of margin per token group).
    None when every length up to UNBOUNDED fits (no group grows with the
    context).  0 when not even one token fits."""
    if chunk <= 0:
        raise ValueError(f"chunk must be > 0, got {chunk}")
    policies = _policies(plan)

    def fits(n: int) -> bool:
        return fits_alone(policies, plan, n, encoder_tokens, min(chunk, n))

    if fits(UNBOUNDED):
        return None
    lo, hi = 0, UNBOUNDED    # fits(lo) or lo == 0; not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
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
