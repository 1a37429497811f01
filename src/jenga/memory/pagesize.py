"""Small-page sizes under the LCM bound: the search behind `planner.py`.

A large page is the least common multiple of every group's small page, and
it can explode (coprime sizes, odd Mamba states, mixed dtypes).  `fit`
keeps it within `ratio` times the largest small page with three levers:

- page_tokens: a token group may take a larger allowed page_tokens (the
  planner offers the base page_tokens times powers of two, so the prefix
  hash block still divides every page);
- split: a group of n layers may become k sub-groups of n/k layers (k | n),
  shrinking its small page by k;
- padding: a layer page may be rounded up (the bytes are wasted).

The objective is lexicographic: the worst per-group padding fraction, then
the fewest changes (extra sub-groups plus doublings of page_tokens), then
the smallest large page.  Changes rank before the large page because the
smallest large page almost always means one-layer groups (Gemma-3-27B at
ratio 2 would become 62 groups of 128 KiB pages instead of 6 groups of
6.5 MiB), and every group costs the manager a page table and a partly
filled large page per request.  Every combination of the first two levers
is searched exactly: a feasible large page is `size * t` for some option's
small page `size` and t <= ratio, and all such values are tried.

Padded search, only when no unpadded combination fits.  Every layout has an
*anchor*: a group whose small page s is at least large/ratio, so the large
page is n * s with n <= ratio.  The search pops anchor pages (every group,
every split, s = its small page padded to the next multiple of its
alignment, then +1 quantum, ...) in increasing order of their padding, and
for each n <= ratio completes the layout: every other group takes the
least-padding divisor of n * s it can use.  The worst padding of any layout
is at least its anchor's, so once the popped anchor pads more than the best
layout found (or the best equals the padding alignment alone forces), no
better layout exists: the answer is exact, and the plan's notes say how
many large pages were tried.  A warm start (smooth large pages 2^a * r, r |
315, where one-layer power-of-two pages always fit, so `fit` never fails)
makes that happen early; a search that would try more than
`_SEARCH_BUDGET` large pages stops there with the best so far and says so.
Padding keeps the preferred page_tokens: at a given large page a doubled
page pads by the same fraction, so doubling would only buy a larger large
page, which is what the ratio bounds.  Pure integer arithmetic (the
padding fraction compared as a float).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from heapq import heappop, heappush
from math import lcm

_SMOOTH_ODD = (1, 3, 5, 7, 9, 15, 21, 35, 45, 63, 105, 315)
# anchor pages the exact padded search may try before it settles for the best so far
_SEARCH_BUDGET = 20_000


@dataclass(frozen=True)
class Need:
    """What one group asks for.

    unit: bytes of one page token of one layer (a token, or a Mamba state).
    layers: layers in the group.  page_tokens: allowed page_tokens, the
    preferred first.  align: a layer page is a multiple of it (the widest
    element size, so typed views stay aligned).  floor: a layer page holds
    at least this many bytes (a common page size the baselines impose).
    """

    unit: int
    layers: int
    page_tokens: tuple[int, ...]
    align: int = 1
    floor: int = 0

    def __post_init__(self) -> None:
        if self.unit <= 0 or self.layers <= 0 or not self.page_tokens or min(self.page_tokens) <= 0:
            raise ValueError(f"Need needs unit, layers and page_tokens > 0, got {self}")


@dataclass(frozen=True)
class Sizing:
    """The chosen paging of one group: `split` sub-groups of
    `layers // split` layers each, `page_tokens` per small page, and
    `layer_page_bytes` per layer page of which `useful_layer_bytes` hold
    state (the rest is padding)."""

    page_tokens: int
    split: int
    layer_page_bytes: int
    useful_layer_bytes: int


@dataclass(frozen=True)
class _Option:
    pt: int
    split: int
    sub_layers: int
    useful: int          # useful bytes of one layer page
    layer_bytes: int     # layer page bytes before any extra padding
    cost: int            # extra sub-groups + doublings of page_tokens

    @property
    def size(self) -> int:
        return self.layer_bytes * self.sub_layers


@dataclass(frozen=True)
class Layout:
    """What `fit` chose: one Sizing per need (in order), the large page
    bytes, and a line on how the search went (empty when the natural LCM
    already fit)."""

    sizings: list[Sizing]
    large: int
    note: str = ""


def fit(needs: Sequence[Need], ratio: int, allow_padding: bool = True) -> Layout:
    """The layout with the large page <= ratio * the largest small page
    (see module doc).  With allow_padding False only page_tokens and splits
    are used; callers must then offer options that can fit (a common floor
    always does).  Raises ValueError for ratio < 1."""
    if ratio < 1:
        raise ValueError(f"max_lcm_ratio must be >= 1, got {ratio}")
    options = [_options(n) for n in needs]
    base = [opts[0] for opts in options]
    large = lcm(*(o.size for o in base))
    if large <= ratio * max(o.size for o in base):
        return Layout([_sizing(o, o.layer_bytes) for o in base], large)
    found = _exact(options, ratio)
    if found is None and allow_padding:
        return _padded(needs, options, ratio)
    if found is None:
        raise RuntimeError("no unpadded page layout fits the LCM bound and padding is off")
    chosen, large = found
    return Layout([_sizing(o, o.layer_bytes) for o in chosen], large,
                  f"unpadded search: {len(chosen)} groups fit without padding at large page {large} B")


def _sizing(o: _Option, layer_bytes: int) -> Sizing:
    return Sizing(o.pt, o.split, layer_bytes, o.useful)


def _divisors_of(n: int) -> list[int]:
    """Divisors of a layer count (small)."""
    return [d for d in range(1, n + 1) if n % d == 0]


def _options(need: Need) -> list[_Option]:
    """Every (page_tokens, split) of a need, the preferred one first;
    duplicates of a small page size keep the cheapest."""
    out: dict[int, _Option] = {}
    for j, pt in enumerate(need.page_tokens):
        useful = pt * need.unit
        layer = max(useful, need.floor)
        for k in _divisors_of(need.layers):
            o = _Option(pt, k, need.layers // k, useful, layer, (k - 1) + j)
            if o.size not in out or o.cost < out[o.size].cost:
                out[o.size] = o
    first = _Option(need.page_tokens[0], 1, need.layers, need.page_tokens[0] * need.unit,
                    max(need.page_tokens[0] * need.unit, need.floor), 0)
    return [first] + [o for o in out.values() if o != first]


def _exact(options: list[list[_Option]], ratio: int) -> tuple[list[_Option], int] | None:
    """Fewest changes, then smallest large page, without padding.  A
    feasible large page is some option's small page times t <= ratio."""
    candidates = sorted({o.size * t for opts in options for o in opts for t in range(1, ratio + 1)})
    best, best_key = None, None
    for large in candidates:
        per_group = []
        for opts in options:
            fitting = [o for o in opts if large % o.size == 0]
            if not fitting:
                break
            per_group.append(fitting)
        else:
            chosen = _cheapest_bounded(per_group, large, ratio)
            if chosen is not None:
                key = (sum(o.cost for o in chosen), large)
                if best_key is None or key < best_key:
                    best, best_key = chosen, key
    return (best, best_key[1]) if best is not None else None


def _cheapest_bounded(per_group: list[list[_Option]], large: int, ratio: int) -> list[_Option] | None:
    """Cheapest option per group such that some small page is >= large/ratio."""
    cheap = [min(opts, key=lambda o: (o.cost, o.size)) for opts in per_group]
    if max(o.size for o in cheap) * ratio >= large:
        return cheap
    best, best_cost = None, None
    for g, opts in enumerate(per_group):
        big = [o for o in opts if o.size * ratio >= large]
        if not big:
            continue
        o = min(big, key=lambda x: (x.cost, x.size))
        cost = sum(c.cost for c in cheap) - cheap[g].cost + o.cost
        if best_cost is None or cost < best_cost:
            best, best_cost = cheap[:g] + [o] + cheap[g + 1:], cost
    return best


def _padded(needs: Sequence[Need], options: list[list[_Option]], ratio: int) -> Layout:
    """The least-waste padded layout under the bound (module doc, "Padded
    search"): a warm start from smooth large pages, then every anchor page
    in order of its padding until no better layout can exist."""
    # page_tokens stays preferred: a larger page pads by the same fraction at
    # the same large page, and only buys a larger large page
    table = [[(o.size, o.sub_layers * need.align, o.cost, o) for o in group if o.pt == group[0].pt]
             for need, group in zip(needs, options)]
    search = _Search(table)
    best = _warm_start(search, ratio)
    heap = []
    for g, group in enumerate(table):
        for size, q, cost, o in group:
            s = -(-size // q) * q
            heappush(heap, (1.0 - size / s, cost, g, s, q, o))
    # no layout pads less than its worst group must to keep its typed views aligned
    floor = max(min(frac for frac, _, g2, *_ in heap if g2 == g) for g in range(len(table)))
    exact, tried = True, 0
    while heap and best.key[0] > floor:
        frac, cost, g, s, q, o = heappop(heap)
        if frac > best.key[0]:
            break
        if tried >= _SEARCH_BUDGET:
            exact = False
            break
        heappush(heap, (1.0 - o.size / (s + q), cost, g, s + q, q, o))
        for n in range(1, ratio + 1):
            tried += 1
            best = search.complete(g, o, s, n * s, best)
    how = "exact" if exact else f"stopped after {_SEARCH_BUDGET} candidates"
    note = (f"padded search ({how}): {tried} large-page candidates tried, least worst padding "
            f"{100 * best.key[0]:.2f}% at large page {best.large} B")
    return Layout(best.sizings, best.large, note)


@dataclass(frozen=True)
class _Found:
    key: tuple[float, int, int]          # (worst padding fraction, changes, large page)
    sizings: list[Sizing]
    large: int


_LOOSE = _Found((1.0, 1 << 62, 1 << 62), [], 0)


class _Search:
    """Completes a layout around one anchor group.  Groups are tried in
    the order of their last failure (the hardest first), so most candidate
    large pages are rejected after one group."""

    def __init__(self, table: list[list[tuple[int, int, int, _Option]]]) -> None:
        self.table = table
        self.order = list(range(len(table)))

    def complete(self, anchor: int, ao: _Option, a_small: int, large: int, best: _Found) -> _Found:
        """`best`, or a better layout in which `anchor` takes option `ao`
        with small page `a_small` (which divides `large` and keeps it within
        the ratio) and every other group its least-padding option."""
        limit = best.key[0]
        worst, cost = 1.0 - ao.size / a_small, ao.cost
        picks = {anchor: (ao, a_small)}
        for i, g in enumerate(self.order):
            if g == anchor:
                continue
            choice = None
            for size, q, c, o in self.table[g]:
                small = _smallest_small(large, size, q, limit)
                if small is not None:
                    k = (1.0 - size / small, c)
                    if choice is None or k < choice[0]:
                        choice = (k, o, small)
            if choice is None or choice[0][0] > limit:
                self.order.insert(0, self.order.pop(i))
                return best
            worst, cost = max(worst, choice[0][0]), cost + choice[0][1]
            picks[g] = (choice[1], choice[2])
        key = (worst, cost, large)
        if key >= best.key:
            return best
        sizings = [_sizing(o, small // o.sub_layers) for o, small in (picks[g] for g in range(len(self.table)))]
        return _Found(key, sizings, large)


def _smallest_small(large: int, size: int, quantum: int, limit: float) -> int | None:
    """The smallest divisor of `large` that is a multiple of `quantum`, at
    least `size` and pads it by at most `limit`, or None."""
    if large % quantum:
        return None
    hi = int(size / (1.0 - limit)) if limit < 1.0 else large
    lo_n, hi_n = -(-large // min(hi, large)), large // size
    if hi_n - lo_n > 256:                # wide window: walk the divisors instead
        e = _smallest_divisor_at_least(large // quantum, -(-size // quantum))
        return None if e is None or e * quantum > hi else e * quantum
    for n in range(hi_n, lo_n - 1, -1):  # largest count first = smallest page
        if large % n == 0 and (large // n) % quantum == 0:
            return large // n
    return None


def _warm_start(search: _Search, ratio: int) -> _Found:
    """A good first layout, so the exact search prunes early: every option
    padded to a power of two (always fits: one-layer pages of powers of two
    divide each other), and smooth large pages 2^a * r (r | 315)."""
    best = _LOOSE
    for large in _smooth_candidates(search.table, ratio):
        for g, group in enumerate(search.table):
            for size, q, _, o in group:
                a_small = _smallest_small(large, size, q, 1.0)
                if a_small is not None and a_small * ratio >= large:
                    best = search.complete(g, o, a_small, large, best)
    assert best is not _LOOSE, "one-layer power-of-two pages always fit"
    return best


def _smooth_candidates(table: list[list[tuple[int, int, int, _Option]]], ratio: int) -> list[int]:
    lo = max(min(row[0] for row in group) for group in table)
    # a padded page stays under twice its size (the power-of-two fallback), so larger pages cannot fit
    hi = 2 * ratio * max(row[0] for group in table for row in group)
    out = set()
    for r in _SMOOTH_ODD:
        x = r * _pow2_at_least(-(-lo // r))
        while x <= hi and len(out) < 4096:
            out.add(x)
            x *= 2
    return sorted(out)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _smallest_divisor_at_least(n: int, x: int) -> int | None:
    """Smallest divisor of n that is >= x, or None when x > n."""
    if x > n:
        return None
    twos = (n & -n).bit_length() - 1
    best = n
    for odd in _odd_divisors(n >> twos):
        if odd >= x:
            best = min(best, odd)
            continue
        shift = (-(-x // odd) - 1).bit_length()     # smallest i with odd * 2^i >= x
        if shift <= twos:
            best = min(best, odd << shift)
    return best


@lru_cache(maxsize=4096)
def _odd_divisors(m: int) -> tuple[int, ...]:
    """Divisors of the odd number m, by trial division (fast for the smooth
    numbers page sizes are made of)."""
    divs, p = [1], 3
    while p * p <= m:
        if m % p == 0:
            e = 0
            while m % p == 0:
                m //= p
                e += 1
            divs = [d * p ** i for d in divs for i in range(e + 1)]
        p += 2
    if m > 1:
        divs += [d * m for d in divs]
    return tuple(divs)
