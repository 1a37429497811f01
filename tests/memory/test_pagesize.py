"""pagesize.fit's padded search is exact: on tiny needs it finds the same
least worst padding as trying every large page up to the bound."""

from __future__ import annotations

import random

import pytest

from jenga.memory.pagesize import Need, _options, _smallest_divisor_at_least, fit


def _brute(needs, ratio):
    """Least worst padding over every large page (all options of every group)."""
    options = [_options(n) for n in needs]
    lo = max(min(o.size for o in opts) for opts in options)
    best = None
    for large in range(lo, 2 * ratio * max(o.size for opts in options for o in opts) + 1):
        per = []
        for need, opts in zip(needs, options):
            fits = []
            for o in opts:
                q = o.sub_layers * need.align
                e = _smallest_divisor_at_least(large // q, -(-o.size // q)) if large % q == 0 else None
                if e is not None:
                    fits.append((1 - o.size / (e * q), e * q))
            if not fits:
                break
            per.append(sorted(fits))
        else:
            # some group must keep a small page >= large / ratio: try each as that group
            for g, f in enumerate(per):
                big = [x for x, small in f if small * ratio >= large]
                if big:
                    worst = max([p[0][0] for j, p in enumerate(per) if j != g] + [big[0]])
                    best = worst if best is None else min(best, worst)
    return best


def _tiny_needs(seed):
    rnd = random.Random(seed)
    out = []
    for _ in range(rnd.randint(2, 3)):
        align = rnd.choice([1, 2, 4])
        out.append(Need(max(align, rnd.randint(3, 300) // align * align), rnd.choice([1, 2, 3, 4, 6]), (1,), align))
    return out, rnd.choice([1, 2, 4, 8])


@pytest.mark.parametrize("seed", range(8))
def test_padded_search_is_exact_on_tiny_needs(seed):
    needs, ratio = _tiny_needs(seed)
    layout = fit(needs, ratio)
    worst = max(1 - s.useful_layer_bytes / s.layer_page_bytes for s in layout.sizings)
    assert worst == pytest.approx(_brute(needs, ratio))
    assert layout.large <= ratio * max(s.layer_page_bytes * (n.layers // s.split)
                                       for s, n in zip(layout.sizings, needs))


def test_padded_layout_exact_pages():
    # 3 layers of 46 B and 3 of 160 B, ratio 2: no unpadded layout fits; the
    # second group pads 160 -> 161 B per layer (0.62%): 966 = 7 * 138 = 2 * 483
    layout = fit([Need(46, 3, (1,), 1), Need(160, 3, (1,), 1)], 2)
    assert layout.large == 966
    assert [(s.split, s.layer_page_bytes, s.useful_layer_bytes) for s in layout.sizings] == [(1, 46, 46), (1, 161, 160)]
    assert layout.note == ("padded search (exact): 12 large-page candidates tried, least worst padding 0.62% "
                           "at large page 966 B")
