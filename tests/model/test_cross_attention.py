"""Which images a token sees (against transformers' processor), and the
cross-attention metadata built from a step."""

import pytest
import torch

from jenga.memory.plan import Group
from jenga.memory.spec import LayerSpec
from jenga.memory.types import ImageRef
from jenga.model.cross_attention import build_cross_metadata, cross_attend, image_ranges
from jenga.model.multimodal import ImageInput, ImageStore
from jenga.sched.params import SamplingParams
from jenga.sched.step import SeqStep, StepPlan

IMG = 9


@pytest.mark.parametrize("ids", [
    [1, IMG, 2, 3],
    [1, 2, IMG, 3, IMG, 4, 5],
    [IMG, IMG, 1, 2, IMG, 3],
    [1, IMG, IMG, IMG],
    [IMG, 1, IMG, IMG, 2, 3, IMG],
])
def test_image_ranges_match_transformers(ids):
    from transformers.models.mllama.processing_mllama import get_cross_attention_token_mask
    ref = [(a, len(ids) if b == -1 else b) for a, b in get_cross_attention_token_mask(ids, IMG)]
    assert image_ranges([i for i, t in enumerate(ids) if t == IMG], len(ids)) == ref


def _step():
    """Two seqs: r0 (prompt of 4, image at 1 with 1 real tile of 2) prefills
    tokens 0..3; r1 (no image) decodes one token.  2 patches per tile."""
    g = Group(1, LayerSpec("cross", "float32", 1, 2), (1,), page_tokens=2, layer_page_bytes=32, per_large=1)
    r0 = SeqStep("r0", (1, IMG, 2, 3), 0, ((), (4, 5)), True, SamplingParams(), 4, (ImageRef(1, 4, "h"),))
    r1 = SeqStep("r1", (7,), 6, ((), ()), True, SamplingParams(), 3)
    store = ImageStore()
    store.add("r0", [ImageInput(torch.zeros(2, 3, 1, 1), "h", 4, aspect_ratio_id=1, num_tiles=1)])
    return StepPlan(1, (r0, r1)), g, store


def test_metadata_masks_tiles_and_rows_before_the_image():
    step, g, store = _step()
    meta = build_cross_metadata(step, g, store, patches=2, device=torch.device("cpu"))
    assert meta.rows.tolist() == [0, 1, 2, 3]          # r1 (row 4) has no image: it skips cross layers
    assert meta.sees.tolist() == [0.0, 1.0, 1.0, 1.0]
    (b,) = meta.batches
    assert b.pages.tolist() == [[4, 4, 5, 5]] and b.offsets.tolist() == [[0, 1, 0, 1]]
    # token 0 sees no image: it attends to every encoder token (padding tile too), as transformers does
    assert b.mask[0].tolist() == [[True] * 4] + [[True, True, False, False]] * 3


def test_cross_attend_equals_dense_reference():
    step, g, store = _step()
    meta = build_cross_metadata(step, g, store, patches=2, device=torch.device("cpu"))
    torch.manual_seed(0)
    k_cache, v_cache = torch.randn(8, 2, 1, 2), torch.randn(8, 2, 1, 2)
    k_cache[6:] = float("nan")                           # pages no key uses
    q = torch.randn(4, 2, 2)
    out = cross_attend(q, k_cache, v_cache, meta, scale=0.5)
    keys = k_cache[[4, 4, 5, 5], [0, 1, 0, 1], 0]
    vals = v_cache[[4, 4, 5, 5], [0, 1, 0, 1], 0]
    for row, n in ((0, 4), (1, 2), (3, 2)):
        w = torch.softmax((q[row] @ keys[:n].T) * 0.5, dim=-1)
        torch.testing.assert_close(out[row], w @ vals[:n], rtol=0, atol=1e-6)


def test_no_images_no_metadata():
    step, g, store = _step()
    assert build_cross_metadata(StepPlan(1, step.seqs[1:]), g, store, 2, torch.device("cpu")) is None
