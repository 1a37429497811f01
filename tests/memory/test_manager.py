"""MemoryManager with each policy: exact page tables, hits and eviction orders."""

from __future__ import annotations

import pytest

from helpers import CHUNK8, CROSS, FULL, MAMBA, SLIDE8, VISION, tiny_plan
from jenga.memory.hashing import image_page_key
from jenga.memory.manager import MemoryManager
from jenga.memory.types import ImageRef

NO = -1


def run(m, rid, tokens, images=(), upto=None, chunk=100):
    """Admit and compute `tokens` (up to `upto`) in chunks; returns the hit."""
    m.add(rid, tokens, len(tokens), images)
    hit = m.lookup(rid)
    start, end = hit.num_tokens, upto or len(tokens)
    first = True
    while start < end:
        stop = min(end, start + chunk)
        assert m.allocate(rid, start, stop, hit_tokens=start if first else 0) is not None
        m.commit(rid, stop)
        m.check_invariants()
        m.tick()
        start, first = stop, False
    return hit


def test_full_prefix_hit_shares_pages_exactly():
    m = MemoryManager(tiny_plan([(FULL, 1, 4)], 16))
    run(m, "a", list(range(10)))
    assert m.page_tables("a") == ((0, 1, 2),)
    m.remove("a")
    hit = run(m, "b", list(range(9)) + [50, 51])
    assert hit.num_tokens == 8                       # pages 0, 1 shared; token 8 differs in page 2
    assert m.page_tables("b") == ((0, 1, 2),)    # the partial page was freed, not cached, and reused
    m.check_invariants()


def test_sliding_releases_out_of_window_pages_and_hits_after_their_eviction():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], 14))
    tokens = list(range(24))
    run(m, "a", tokens)
    # window 8: the next token (24) needs 17..23 -> sliding pages for 0..15 released
    assert m.page_tables("a") == ((0, 1, 2, 3, 4, 5), (NO, NO, NO, NO, 10, 11))
    m.remove("a")
    # pressure: a stranger takes 2 free and 2 evicted large pages; the
    # out-of-window sliding pages are the oldest, and among them the
    # earliest tokens go first: they serve only the shortest hits
    run(m, "x", [900 + i for i in range(8)])
    assert m.page_tables("x") == ((12, 13), (6, 7))   # sliding tokens 0..3, then 4..7
    # a hit at 20 needs the window 13..19: page 9 (12..15) was kept for it
    m.add("c", tokens[:20] + [55, 56], 22)
    assert m.lookup("c").num_tokens == 20
    m.remove("c")
    hit = run(m, "b", tokens + [77])
    assert hit.num_tokens == 24 and hit.per_group == (24, 24)
    assert m.page_tables("b")[1][:6] == (NO, NO, NO, NO, 10, 11)


def test_chunked_releases_pages_of_finished_chunks():
    m = MemoryManager(tiny_plan([(CHUNK8, 1, 4)], 8))
    run(m, "a", list(range(13)))
    assert m.page_tables("a") == ((NO, NO, 2, 3),)   # chunk [8, 16) is current


def _eviction_order(allocator):
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], 6, allocator))
    run(m, "a", list(range(12)), chunk=4)      # sliding tokens 0..3 leave scope at step 2
    assert m.page_tables("a") == ((0, 2, 4), (NO, 3, 5))
    m.remove("a")
    m.add("z", [999] * 40, 40)
    order = []
    for end in (4, 8, 12):                     # each step takes one page per group
        before = {(g, p) for g in range(2) for p in m.pool.cache_map[g].values()}
        m.allocate("z", end - 4, end)
        after = {(g, p) for g in range(2) for p in m.pool.cache_map[g].values()}
        order += sorted(before - after, key=lambda gp: (gp[0] != 1 or gp[1] != 1, gp))
    return m, order


def test_aligned_eviction_out_of_scope_first_then_later_tokens_in_every_group():
    m, order = _eviction_order("jenga")
    # (group, page): sliding tokens 0..3 (out of window, oldest), then tokens
    # 8..11 of both groups, then 4..7 of both, then full tokens 0..3
    assert order == [(1, 1), (0, 4), (0, 2), (1, 5), (0, 0), (1, 3)]
    assert m.pool.stamp[0][4] == m.pool.stamp[1][5] == (3, -12)    # same token, same stamp


def test_unaligned_baseline_stamps_by_release_order_per_group():
    m, order = _eviction_order("uniform")
    # vLLM's free queue: each group's pages in the order they were released
    # (tail first), groups one after another; eviction stays within a group
    assert [m.pool.stamp[0][p] for p in (4, 2, 0)] == [(3, 2), (3, 3), (3, 4)]
    assert [m.pool.stamp[1][p] for p in (1, 5, 3)] == [(2, 1), (3, 5), (3, 6)]
    assert order == [(1, 1), (0, 4), (0, 2), (1, 5), (0, 0), (1, 3)]


def test_mamba_checkpoint_at_prompt_end_and_branch_point():
    plan = tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 24)
    m = MemoryManager(plan, mamba_interval=64)
    system = [5] * 10
    run(m, "a", system + [1] * 5)                        # prompt-end checkpoint at 12
    m.remove("a")
    hit_b = run(m, "b", system + [2] * 5)
    assert hit_b.num_tokens == 0 and hit_b.per_group == (8, 0)   # mamba had no state at 8...
    m.remove("b")
    hit_c = run(m, "c", system + [3] * 5)                 # ...so b saved one there (branch point)
    assert hit_c.num_tokens == 8
    hit_d = run(m, "d", system + [1] * 5 + [4])           # a's full prompt: its end checkpoint
    assert hit_d.num_tokens == 12


def test_mamba_hit_copies_the_checkpoint_into_a_fresh_running_page():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 24), mamba_interval=4)
    run(m, "a", list(range(9)))
    m.remove("a")
    m.add("b", list(range(9)) + [1], 10)
    hit = m.lookup("b")
    act = m.allocate("b", hit.num_tokens, 10, hit_tokens=hit.num_tokens)
    assert hit.num_tokens == 8
    src = m.pool.lookup(1, m.reqs["b"].key_at(8))
    assert act.copies == ((1, src, m.page_tables("b")[1][0]),) and act.zeros == ()
    m.commit("b", 10)
    m.check_invariants()


def test_vision_embeddings_run_once_and_free_after_their_chunk():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (VISION, 1, 4)], 32))
    img = ImageRef(2, 10, "cat")
    tokens = [1, 2] + [0] * 10 + [3, 4]
    m.add("a", tokens, len(tokens), (img,))
    assert m.lookup("a").num_tokens == 0
    act = m.allocate("a", 0, 6)
    assert act.encoder_runs == (0,)
    assert m.page_tables("a")[1] == (2, 3, 4)            # 10 embeddings, 3 pages
    m.commit("a", 6)                                     # image tokens 2..5 done: page 0 freed
    assert m.page_tables("a")[1] == (NO, 3, 4)
    act = m.allocate("a", 6, 14)
    assert act.encoder_runs == ()                        # no second encoder run
    m.commit("a", 14)
    assert m.page_tables("a")[1] == (NO, NO, NO)
    m.check_invariants()
    # a prefix hit may not cut the image unless the rest of it is cached
    m.add("b", tokens[:8] + [9] * 6, 14, (img,))
    assert m.lookup("b").num_tokens == 8                 # cuts at 8, image pages cached
    m.reset_prefix_cache()
    m.add("c", tokens[:8] + [9] * 6, 14, (img,))
    assert m.lookup("c").num_tokens == 0                 # embeddings dropped: may not cut the image


def test_cross_kv_is_shared_by_image_content():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (CROSS, 1, 1)], 64))
    img = ImageRef(0, 6, "dog")
    m.add("a", [1, 2, 3], 3, (img,))
    assert m.allocate("a", 0, 3).encoder_runs == (0,)
    m.commit("a", 3)
    m.add("b", [1, 2, 9], 3, (img,))
    assert m.allocate("b", 0, 3).encoder_runs == ()     # same picture: its cross KV is reused
    assert m.page_tables("a")[1] == m.page_tables("b")[1]
    m.check_invariants()


def test_failed_allocation_changes_nothing():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], 4))
    m.add("a", list(range(30)), 30)
    assert m.allocate("a", 0, 30) is None
    assert m.page_tables("a") == ((), ()) and m.pool.num_free_large() == 4
    m.check_invariants()


def test_errors_name_the_problem():
    m = MemoryManager(tiny_plan([(FULL, 1, 4)], 4))
    m.add("a", [1, 2], 2)
    with pytest.raises(ValueError, match="already registered"):
        m.add("a", [1], 1)
    with pytest.raises(ValueError, match="bad token range"):
        m.allocate("a", 0, 9)
    with pytest.raises(ValueError, match="mamba_interval"):
        MemoryManager(m.plan, mamba_interval=0)


def test_vision_outside_pool_reruns_the_encoder_for_every_chunk():
    base = tiny_plan([(FULL, 1, 4)], 32, "max-page")
    from dataclasses import replace
    m = MemoryManager(replace(base, vision_outside_pool=True))
    img = ImageRef(2, 10, "cat")
    m.add("a", [1] * 14, 14, (img,))
    runs = []
    for start, end in ((0, 6), (6, 10), (10, 14)):
        runs.append(m.allocate("a", start, end).encoder_runs)
        m.commit("a", end)
    assert runs == [(0,), (0,), (0,)]        # vLLM v0: once per chunk, not once per image


def test_needed_bytes_count_shared_pages_once():
    m = MemoryManager(tiny_plan([(FULL, 1, 4)], 16))
    run(m, "a", list(range(9)))
    one = m.usage().needed_bytes
    assert one == 9 * 8                               # 9 tokens x 8 bytes
    run(m, "b", list(range(8)) + [50])                # shares pages 0, 1 (8 tokens)
    assert m.usage().needed_bytes == (9 + 1) * 8      # b adds only its own token
    m.check_invariants()


def _count_scans(m):
    """Wrap every policy's longest_hit to count prefix-cache scans."""
    calls = []
    for p in m.policies:
        p.longest_hit = (lambda f, g: lambda *a: calls.append(g) or f(*a))(p.longest_hit, p.gid)
    return calls


def test_unchanged_waiting_request_is_not_rescanned():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 24), mamba_interval=4)
    system = [5] * 10
    run(m, "a", system + [1] * 5)
    m.add("w", system + [2] * 5, 15)
    scans = _count_scans(m)
    first = m.lookup("w")
    assert first.per_group == (8, 8) and scans
    m.reqs["w"].branch = 99                      # released requests lose their branch point
    scans.clear()
    assert [m.lookup("w") for _ in range(3)] == [first] * 3
    assert scans == [] and m.reqs["w"].branch == 0   # the memo re-applies the branch found
    run(m, "b", [7] * 9)                         # new keys enter the cache: scan again
    assert m.lookup("w") == first and scans
    scans.clear()
    m.reqs["w"].tokens.append(3)                 # a new token (preempted mid-decode): scan again
    m.lookup("w")
    assert scans
    m.check_invariants()


def test_lookup_after_eviction_sees_the_pages_gone():
    m = MemoryManager(tiny_plan([(FULL, 1, 4)], 4))
    run(m, "a", list(range(9)))
    m.remove("a")
    m.add("w", list(range(9)) + [1], 10)
    assert m.lookup("w").num_tokens == 8
    m.add("b", [9] * 15, 15)
    assert m.allocate("b", 0, 15) is not None    # evicts a's cached pages, publishes nothing
    assert m.lookup("w").num_tokens == 0


def test_decode_fast_paths_keep_the_page_table_tuple():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], 32))
    tokens = list(range(6))
    run(m, "a", tokens)
    tables = m.page_tables("a")
    tokens.append(6)
    assert m.allocate("a", 6, 7) is not None     # page 1 has room: nothing to take
    m.commit("a", 7)
    assert m.page_tables("a") is tables
    tokens.append(7)
    m.allocate("a", 7, 8)
    m.commit("a", 8)                             # publishes page 1, releases nothing
    assert m.page_tables("a") is tables
    tokens.append(8)
    m.allocate("a", 8, 9)                        # a new page in each group
    assert m.page_tables("a") == ((0, 1, 4), (2, 3, 5)) and m.page_tables("a") is not tables
    tables = m.page_tables("a")
    for t in (9, 10):
        m.commit("a", t)
        assert m.page_tables("a") is tables
        tokens.append(t)
        m.allocate("a", t, t + 1)
    m.commit("a", 11)                            # tokens 0..3 leave the 8-token window
    assert m.page_tables("a") == ((0, 1, 4), (NO, 3, 5))
    m.check_invariants()


def test_failed_hit_allocation_leaves_no_trace_of_the_hit():
    m = MemoryManager(tiny_plan([(FULL, 1, 4)], 5))
    run(m, "a", list(range(9)))
    m.remove("a")                                     # pages 0, 1 cached (8 tokens)
    run(m, "b", [50] * 9)                             # b holds 3 of the 5 pages
    m.add("w", list(range(8)) + [1] * 12, 20)
    assert m.lookup("w").num_tokens == 8
    assert m.allocate("w", 8, 20, hit_tokens=8) is None   # 3 more pages: only 2 left
    m.remove("b")
    m.reset_prefix_cache()
    assert m.lookup("w").num_tokens == 0
    m.allocate("w", 0, 20)
    m.commit("w", 20)
    assert len(m.pool.cache_map[0]) == 5              # all five pages published, from page 0
    m.check_invariants()


def test_an_image_is_evicted_whole_wherever_its_pages_lie():
    # vision pages of 2 tokens, two to a large page: image A (2 tokens) and
    # the head of image B (4 tokens) share large page 3, B's tail lies in 4
    plan = tiny_plan([(FULL, 1, 4), (VISION, 1, 2)], 6)
    m = MemoryManager(plan, enable_prefix_caching=True)
    images = (ImageRef(1, 2, "A"), ImageRef(3, 4, "B"))
    m.tick()
    m.add("a", list(range(10)), 10, images)
    assert m.allocate("a", 0, 10).encoder_runs == (0, 1)
    assert m.page_tables("a") == ((0, 1, 2), (6, 7, 8))
    m.commit("a", 10)
    m.tick()
    m.remove("a")

    def cached():
        return [[m.pool.lookup(1, image_page_key(img, i, "vision:1")) for i in range(-(-img.num_tokens // 2))]
                for img in images]

    assert cached() == [[6], [7, 8]]
    for k, (page, left) in enumerate([(2, [[6], [7, 8]]), (5, [[6], [7, 8]]),
                                      # evicting large page 4 (B's tail) takes B's head out of 3 too
                                      (4, [[6], [None, None]]),
                                      (3, [[None], [None, None]])]):
        m.tick()
        m.add(f"x{k}", [100 + k] * 4, 4)
        assert m.allocate(f"x{k}", 0, 4) is not None
        assert m.page_tables(f"x{k}") == ((page,), ()) and cached() == left
        m.check_invariants()
