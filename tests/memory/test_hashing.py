"""BlockHasher: chained block keys, hashed once per block, sliced per page."""

from __future__ import annotations

import pytest

import jenga.memory.hashing as hashing
from helpers import FULL, SLIDE8, tiny_plan
from jenga.memory.hashing import BlockHasher
from jenga.memory.manager import MemoryManager
from jenga.memory.types import ImageRef


def test_page_keys_are_the_block_keys_at_page_ends():
    h = BlockHasher(4, (ImageRef(2, 3, "img"),), salt="s")
    tokens = list(range(30))
    keys = h.page_keys(tokens, 30, 8)
    assert keys == [h.key_at(8), h.key_at(16), h.key_at(24)] and len(set(keys)) == 3
    assert h.page_keys(tokens, 30, 4) == [h.key_at(4 * b) for b in range(1, 8)]
    assert h.page_keys(tokens, 30, 8, first=1) == keys[1:]
    assert h.page_keys(tokens, 23, 8) == keys[:2]          # a page must be complete
    assert h.page_keys(tokens, 99, 8) == keys              # never past the known tokens


def test_page_keys_depend_on_salt_and_images():
    tokens = list(range(16))
    plain = BlockHasher(4).page_keys(tokens, 16, 4)
    assert BlockHasher(4, salt="x").page_keys(tokens, 16, 4)[0] != plain[0]
    with_image = BlockHasher(4, (ImageRef(5, 2, "a"),)).page_keys(tokens, 16, 4)
    assert with_image[0] == plain[0] and with_image[1:] != plain[1:]   # block 1 holds the image


@pytest.mark.parametrize("page", [0, 6, -4])
def test_page_keys_need_whole_blocks(page):
    with pytest.raises(ValueError, match="page_tokens"):
        BlockHasher(4).page_keys(list(range(8)), 8, page)


def test_every_block_is_hashed_once_whatever_the_lookups(monkeypatch):
    """Lookups, allocations and commits all read the same per-request hash
    list: each complete block is hashed exactly once (no rehash per page
    or per lookup)."""
    calls = []
    monkeypatch.setattr(hashing, "hash", lambda x: calls.append(x) or len(calls), raising=False)
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 8)], 32))
    tokens = list(range(21))
    m.add("a", tokens, len(tokens))
    root_calls = len(calls)                     # the chain's root, at registration
    for _ in range(3):
        assert m.lookup("a").num_tokens == 0
    assert m.allocate("a", 0, 21) is not None
    m.commit("a", 21)
    for t in range(21, 40):                     # decode 19 tokens, a lookup each step
        tokens.append(t)
        m.lookup("a")
        assert m.allocate("a", t, t + 1) is not None
        m.commit("a", t + 1)
    assert len(calls) - root_calls == 40 // 4   # 10 complete blocks, 10 hashes
    m.check_invariants()
