"""Start-up sizing on hand-made specs: the longest request a pool holds,
the context limit lowered or refused, and the default CPU pool size."""

from __future__ import annotations

import logging

import pytest

from jenga.engine import sizing
from jenga.memory.manager import MemoryManager
from jenga.memory.planner import build_plan
from jenga.memory.spec import LayerSpec

FULL = LayerSpec("full", "float32", 1, 1)                 # 8 bytes per token and layer
SLIDE8 = LayerSpec("sliding", "float32", 1, 1, window=8)
PAGE = 16 * 8 * 2                                         # one small page of two FULL layers


def _manager(specs, pages: int) -> MemoryManager:
    return MemoryManager(build_plan(specs, pages * PAGE))


def test_longest_request_counts_a_page_of_margin():
    """10 pages of 16 tokens: a request holds ceil(n / 16) pages plus one."""
    cap = sizing.pool_capacity(_manager([FULL, FULL], 10), limit=1000, chunk=64)
    assert (cap.longest_request, cap.tokens_per_group, cap.pool_bytes) == (144, (("full", 160),), 10 * PAGE)
    assert sizing.request_bytes(_manager([FULL, FULL], 10), 144, 64) == 10 * PAGE
    assert sizing.request_bytes(_manager([FULL, FULL], 10), 145, 64) == 11 * PAGE


def test_a_sliding_window_holds_any_length():
    cap = sizing.pool_capacity(_manager([SLIDE8, SLIDE8], 4), limit=100_000, chunk=16)
    assert cap.longest_request == 100_000


def test_an_unset_limit_is_lowered_and_logged(caplog):
    with caplog.at_level(logging.WARNING, "jenga.engine"):
        n = sizing.fit_max_model_len(_manager([FULL, FULL], 10), model_len=1000, user_len=None, chunk=64,
                                     spare=0, budget_source="kv_cache_memory=2560 B")
    assert n == 144
    assert "lowered from the model's 1000 to 144" in caplog.text
    # speculative drafts hold `spare` more tokens per request
    assert sizing.fit_max_model_len(_manager([FULL, FULL], 10), model_len=1000, user_len=None, chunk=64,
                                    spare=4, budget_source="x") == 140


def test_a_set_limit_that_fits_is_kept_and_one_that_does_not_is_refused():
    m = _manager([FULL, FULL], 10)
    assert sizing.fit_max_model_len(m, model_len=1000, user_len=100, chunk=64, spare=0, budget_source="x") == 100
    with pytest.raises(ValueError) as e:
        sizing.fit_max_model_len(m, model_len=1000, user_len=200, chunk=64, spare=0,
                                 budget_source="kv_cache_memory=2560 B (--kv-cache-memory)")
    msg = str(e.value)
    assert msg.startswith("max_model_len=200 (--max-model-len) does not fit the KV pool")
    assert "--kv-cache-memory" in msg and "at most 144 tokens" in msg and "to 144 or less" in msg


def test_a_pool_that_holds_nothing_is_refused():
    with pytest.raises(ValueError, match="smallest request"):
        sizing.fit_max_model_len(_manager([FULL, FULL], 1), model_len=1000, user_len=None, chunk=64, spare=0,
                                 budget_source="x")


def test_default_cpu_pool_fits_two_full_contexts_within_a_quarter_of_memory():
    big = LayerSpec("full", "float32", 64, 128)   # 64 KiB per token
    build = lambda budget: build_plan([big], budget)   # noqa: E731
    need = sizing.request_bytes(MemoryManager(build(sizing.MIN_CPU_POOL_BYTES)), 8192, 2048)
    assert need == (8192 // 16 + 1) * 16 * 64 * 1024
    assert sizing.default_cpu_pool_bytes(build, 8192, 2048, available=64 * 2**30) == 2 * need
    assert sizing.default_cpu_pool_bytes(build, 8192, 2048, available=2 * 2**30) == 512 * 2**20
    assert sizing.default_cpu_pool_bytes(build, 8192, 2048, available=2**20) == sizing.MIN_CPU_POOL_BYTES
    assert sizing.default_cpu_pool_bytes(build, 8192, 2048, available=None) == 2 * need
    small = lambda budget: build_plan([FULL], budget)   # noqa: E731
    assert sizing.default_cpu_pool_bytes(small, 8192, 2048, available=64 * 2**30) == sizing.MIN_CPU_POOL_BYTES
