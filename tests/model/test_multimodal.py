"""Encoder-state slots in page tables, the encoder-run rule, the image store."""

import pytest
import torch

from jenga.memory.plan import Group
from jenga.memory.spec import LayerSpec
from jenga.memory.types import ImageRef
from jenga.model.multimodal import ImageInput, ImageStore, encoder_runs, image_slots, require_pages
from jenga.sched.params import SamplingParams
from jenga.sched.step import NO_PAGE, SeqStep

CROSS = Group(1, LayerSpec("cross", "float32", 2, 4), (1, 3), page_tokens=4, layer_page_bytes=128, per_large=1)
MERGED = Group(0, LayerSpec("full", "float32", 2, 4), (0, 1, 2, 3), page_tokens=4, layer_page_bytes=128,
               per_large=1, holds_encoder_tokens=True)
IMAGES = (ImageRef(1, 6, "a"), ImageRef(3, 3, "b"))


def _seq(tables, start=0, runs=()):
    return SeqStep("r", (5,) * 4, start, tables, True, SamplingParams(), 5, IMAGES, runs)


def test_cross_group_starts_each_image_on_a_fresh_page():
    # image 0: 6 tokens on pages 10, 11 (2 slots unused); image 1: 3 tokens on page 12
    s = _seq(((), (10, 11, 12)))
    p, o = image_slots(s, CROSS, 0)
    assert p.tolist() == [10, 10, 10, 10, 11, 11] and o.tolist() == [0, 1, 2, 3, 0, 1]
    p, o = image_slots(s, CROSS, 1)
    assert p.tolist() == [12, 12, 12] and o.tolist() == [0, 1, 2]


def test_merged_group_packs_encoder_tokens_from_slot_0():
    s = _seq(((20, 21, 22, 23), ()))
    p, o = image_slots(s, MERGED, 1)
    assert p.tolist() == [21, 21, 22] and o.tolist() == [2, 3, 0]


def test_short_table_and_missing_pages_raise():
    with pytest.raises(ValueError, match="table has 2 pages, image 1 needs 3"):
        image_slots(_seq(((), (10, 11))), CROSS, 1)
    with pytest.raises(ValueError, match="request r: image 0 needs group 1 pages that are NO_PAGE"):
        require_pages(_seq(((), ())), 1, 0, torch.tensor([3, NO_PAGE]))


def test_encoder_runs_rule():
    assert encoder_runs(_seq(((), ()), start=0, runs=(1,)), [CROSS]) == (1,)
    # max-page keeps no encoder cache: every image runs on a request's first step, never later
    assert encoder_runs(_seq(((), ()), start=0), [MERGED]) == (0, 1)
    assert encoder_runs(_seq(((), ()), start=4), [MERGED]) == ()


def test_image_store():
    store = ImageStore()
    x = ImageInput(torch.zeros(3, 2, 2), "h", 4)
    store.add("a", [x])
    assert store.get("a", 0) is x and len(store) == 1
    with pytest.raises(ValueError, match="request a: image 1 has no registered input"):
        store.get("a", 1)
    store.drop(["a", "zzz"])
    assert len(store) == 0 and store.images("a") == ()
    with pytest.raises(ValueError, match="num_tokens=0"):
        ImageInput(torch.zeros(1), "h", 0)
