"""Chunked-local groups (Llama 4's RoPE layers) beside a full group: a
request keeps only its current chunk's pages, and a prefix hit needs only
the chunk holding the hit point, so it survives the eviction of earlier
chunks' pages that the full group still caches."""

from __future__ import annotations

from helpers import CHUNK8, FULL, tiny_plan
from jenga.memory.manager import MemoryManager
from test_manager import NO, run


def _cached(m, rid, n):
    """Per group: which of the first n // 4 pages of rid's prompt are cached."""
    r = m.reqs[rid]
    keys = r.hasher.page_keys(r.tokens, n, 4)
    return [m.pool.cached_mask(g, keys) for g in (0, 1)]


def test_hit_inside_a_chunk_needs_only_that_chunk():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (CHUNK8, 1, 4)], 14))
    tokens = list(range(22))
    run(m, "a", tokens, chunk=6)
    # next token 22 (the prompt end's page starts at 20): chunk [16, 24) is current
    assert m.page_tables("a") == ((0, 1, 4, 6, 7, 10), (NO, NO, NO, NO, 9, 11))
    m.remove("a")
    # pressure: a stranger's 12 tokens evict the oldest chunked pages, the
    # first chunk's (tokens 0..7), which left scope first
    run(m, "x", [900 + i for i in range(12)])
    m.add("c", tokens[:20] + [55, 56], 22)
    assert _cached(m, "c", 20) == [[True] * 5, [False, False, True, True, True]]
    # a hit at 20 lies in chunk [16, 24): page 4 (tokens 16..19) suffices
    hit = m.lookup("c")
    assert hit.num_tokens == 20 and hit.per_group == (20, 20)
    assert m.allocate("c", 20, 22, hit_tokens=20) is not None
    # shared: full pages 0..4 and chunked page 4; the page for 20..21 is new
    assert m.page_tables("c") == ((0, 1, 4, 6, 7, 8), (NO, NO, NO, NO, 9, 5))
    m.check_invariants()
    # a hit at 8 would need page 1 (tokens 4..7) of the chunked group: gone
    m.add("d", tokens[:9] + [66] * 4, 13)
    assert m.lookup("d").num_tokens == 0
    m.check_invariants()
