"""TrueNeed: the bytes layers really need, token by token, per group.

Tiny hand-built plans (8 bytes per token per full/sliding/cross layer, 32
bytes per Mamba state) so every expected value is arithmetic on the page."""

from types import SimpleNamespace

import pytest

from helpers import CHUNK8, CROSS, FULL, MAMBA, tiny_plan
from jenga.memory.footprint import TrueNeed, ideal_bytes, longest_request, true_need_bytes
from jenga.memory.planner import build_plan
from jenga.memory.spec import LayerSpec
from jenga.memory.types import ImageRef

SLIDE4 = LayerSpec("sliding", "float32", 1, 1, window=4)
# group 0: sliding(4) x2 layers, 16 B a token, 2-token pages of 32 B;
# group 1: full x1 layer, 8 B a token, 2-token pages of 16 B
WINDOWED = tiny_plan([(SLIDE4, 2, 2), (FULL, 1, 2)], 10, base=2)


def test_kept_is_the_last_window_and_every_full_token():
    need = TrueNeed(WINDOWED)
    # 10 tokens: the window is tokens 6..9, exactly pages 3 and 4 (2 x 32 B)
    assert need.kept(10, 0) == (4 * 16, 10 * 8) == (2 * 32, 80)
    assert need.kept(3, 0) == (3 * 16, 3 * 8)          # shorter than the window
    assert ideal_bytes(WINDOWED, 10, 0) == 64 + 80


def test_step_counts_what_the_step_reads_or_writes():
    need = TrueNeed(WINDOWED)
    # computing tokens 8 and 9: token 8 reads 5..7, so 5..9 are live
    assert need.step(8, 10, 0) == (5 * 16, 10 * 8)
    assert need.step(9, 10, 0) == need.kept(10, 0)     # a decode keeps what it reads
    assert need.step(0, 10, 0) == (10 * 16, 10 * 8)   # a whole prompt at once
    with pytest.raises(ValueError, match="step range"):
        need.step(5, 5, 0)


def test_prefill_peak_is_the_largest_chunk_scope():
    need = TrueNeed(WINDOWED)
    # chunks [0,4) [4,8) [8,10): sliding scopes 4, 7 (from token 1), 5 tokens
    assert need.prefill_peak(10, 0, 4) == (7 * 16, 10 * 8)
    assert need.prefill_peak(10, 0, 1) == need.kept(10, 0)
    with pytest.raises(ValueError, match="chunk"):
        need.prefill_peak(10, 0, 0)


def test_rounded_holds_whole_pages_from_the_scope_start():
    need = TrueNeed(WINDOWED)
    # step [8,10): sliding pages 2..4 (tokens 4..9) = 3 x 32, full 5 x 16
    assert need.rounded(8, 10, 0, current=True) == (96, 80)
    # kept after 10: sliding pages 3..4 = 2 x 32; after 9 tokens the full
    # group rounds 9 tokens (72 B) up to 5 pages (80 B)
    assert need.rounded(8, 10, 0, current=False) == (64, 80)
    assert need.rounded(0, 9, 0, current=False) == (64, 80) and need.kept(9, 0) == (64, 72)
    # prefill of 10 tokens 4 at a time, in pages: chunk [4,8) holds pages 0..3
    assert need.prefill_peak(10, 0, 4, rounded=True) == (4 * 32, 5 * 16)


def test_recurrent_and_encoder_groups():
    plan = tiny_plan([(MAMBA, 2, 1), (CROSS, 1, 1)], 10)
    need = TrueNeed(plan)
    assert need.kept(5, 7) == (2 * 32, 7 * 8)       # one state per layer; every image token
    assert need.step(3, 5, 7) == need.kept(5, 7)     # a state is updated in place
    assert need.prefill_peak(9, 7, 4) == (64, 56)
    assert need.rounded(3, 5, 7, current=True) == (2 * 32, 7 * 8)


def test_max_page_plans_are_refused():
    maxp = build_plan([FULL, CROSS], 1 << 20, allocator="max-page")
    assert any(g.holds_encoder_tokens for g in maxp.groups)
    with pytest.raises(ValueError, match="true specs"):
        TrueNeed(maxp)


def test_true_need_bytes_sums_running_requests():
    running = [SimpleNamespace(num_computed=10, images=()), SimpleNamespace(num_computed=3, images=())]
    assert true_need_bytes(WINDOWED, running) == (64 + 80) + (48 + 24)
    plan = tiny_plan([(FULL, 1, 2), (CROSS, 1, 1)], 10)
    img = SimpleNamespace(num_computed=2, images=(ImageRef(0, 6, "a"), ImageRef(1, 4, "b")))
    assert true_need_bytes(plan, [img]) == 2 * 8 + 10 * 8


def test_longest_request_is_the_largest_that_fits_alone():
    # 32-byte small pages, one per large page, 10 large pages: a request of
    # n tokens prefilled 4 a step needs ceil(n/4) + 1 full pages and, past
    # its first chunk, ceil((7 + 4) / 4) + 1 = 4 chunked pages (+ 1)
    plan = tiny_plan([(FULL, 1, 4), (CHUNK8, 1, 4)], 10)
    assert longest_request(plan, chunk=4) == 16          # 5 + 5 pages; 17 needs 6 + 5
    # prefilled whole, a 17-token prompt holds all 5 chunked pages at once
    assert longest_request(plan, chunk=64) == 16
    assert longest_request(tiny_plan([(FULL, 1, 4), (CHUNK8, 1, 4)], 12), chunk=4) == 24   # 7 + 5: 25 needs 8 + 5
    assert longest_request(tiny_plan([(FULL, 1, 4), (CHUNK8, 1, 4)], 12), chunk=64) == 20  # 6 + 6: 21 needs 7 + 7
    assert longest_request(tiny_plan([(CHUNK8, 1, 4)], 10), chunk=4) is None   # no group grows
    assert longest_request(tiny_plan([(FULL, 1, 4)], 1), chunk=4) == 0
    with pytest.raises(ValueError, match="chunk"):
        longest_request(plan, chunk=0)
