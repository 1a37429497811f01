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
small page `size` and t <= ratio, and all such values are tried.  Padding
is tried only when no unpadded combination fits; it pads to divisors of
candidate large pages of the form 2^a * r (r an odd divisor of 315 =
3^2*5*7, whose divisors are dense enough to keep padding below about 10%
with one-layer sub-groups) or of an unpadded small page times a power of
two.  One-layer sub-groups padded to powers of two always fit (ratio 1), so
`fit` never fails.  Pure integer arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import lcm

_SMOOTH_ODD = (1, 3, 5, 7, 9, 15, 21, 35, 45, 63, 105, 315)


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


def fit(needs: Sequence[Need], ratio: int, allow_padding: bool = True) -> tuple[list[Sizing], int]:
    """Sizings (one per need, in order) and the large page bytes, with the
    large page <= ratio * the largest small page (see module doc).  With
    allow_padding False only page_tokens and splits are used; callers must
    then offer options that can fit (a common floor always does).
    Raises ValueError for ratio < 1."""
    if ratio < 1:
        raise ValueError(f"max_lcm_ratio must be >= 1, got {ratio}")
    options = [_options(n) for n in needs]
    base = [opts[0] for opts in options]
    large = lcm(*(o.size for o in base))
    if large <= ratio * max(o.size for o in base):
        return [_sizing(o, o.layer_bytes) for o in base], large
    found = _exact(options, ratio)
    if found is None and allow_padding:
        return _padded(needs, options, ratio)
    if found is None:
        raise RuntimeError("no unpadded page layout fits the LCM bound and padding is off")
    chosen, large = found
    return [_sizing(o, o.layer_bytes) for o in chosen], large


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


def _padded(needs: Sequence[Need], options: list[list[_Option]], ratio: int) -> tuple[list[Sizing], int]:
    """Best padded layout over the candidate large pages (module doc)."""
    # only the preferred page_tokens: doubling a page does not change how much of it padding takes
    opts = [[o for o in group if o.pt == group[0].pt] for group in options]
    best_key, best = None, None
    for large in _pad_candidates(opts, ratio):
        picked = []
        for need, group in zip(needs, opts):
            choice = _best_padding(need, group, large, best_key[0] if best_key else 2.0)
            if choice is None:
                break
            picked.append(choice)
        else:
            if max(lb * o.sub_layers for _, o, lb in picked) * ratio < large:
                continue
            key = (max(f for f, _, _ in picked), sum(o.cost for _, o, _ in picked), large)
            if best_key is None or key < best_key:
                best_key, best = key, [_sizing(o, lb) for _, o, lb in picked]
    assert best is not None, "one-layer power-of-two pages always fit"
    return best, best_key[2]


def _pad_candidates(opts: list[list[_Option]], ratio: int) -> list[int]:
    lo = max(min(o.size for o in group) for group in opts)
    # a padded page stays under twice its size (the power-of-two fallback), so larger pages cannot fit
    hi = 2 * ratio * max(o.size for group in opts for o in group)
    out = set()
    for r in _SMOOTH_ODD:
        x = r * _pow2_at_least(-(-lo // r))
        while x <= hi and len(out) < 4096:
            out.add(x)
            x *= 2
    for group in opts:
        for o in group:
            out.update(o.size << j for j in range(ratio.bit_length()))
    return sorted(out)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _best_padding(need: Need, group: Iterable[_Option], large: int,
                  limit: float) -> tuple[float, _Option, int] | None:
    """(padding fraction, option, padded layer page) with the least padding
    whose small page divides `large`, or None when none is within `limit`."""
    best = None
    for o in group:
        quantum = o.sub_layers * need.align
        if large % quantum:
            continue
        e = _smallest_divisor_at_least(large // quantum, -(-o.size // quantum))
        if e is None:
            continue
        small = e * quantum
        frac = 1.0 - (o.useful * o.sub_layers) / small
        if frac <= limit and (best is None or (frac, o.cost) < (best[0], best[1].cost)):
            best = (frac, o, small // o.sub_layers)
    return best


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
