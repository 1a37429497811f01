"""ModelRunner on hand-built StepPlans: sampled rows, shared prefix pages,
copies then zeros before the forward, and what it refuses."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from jenga.engine.runner import ModelRunner, RunnerOutput
from jenga.memory.plan import Group, MemoryPlan
from jenga.memory.spec import LayerSpec
from jenga.memory.types import ImageRef
from jenga.model.kv_pool import KVPool
from jenga.model.loader import load_model
from jenga.sched.params import SamplingParams
from jenga.sched.step import NO_PAGE, PageCopy, SeqStep, StateSave, StepPlan

P = 4
SLIDE = LayerSpec("sliding", "float32", 2, 8, window=6)    # 128 B per token
FULL = LayerSpec("full", "float32", 2, 8)
GREEDY = SamplingParams(temperature=0.0)


def _plan(slide: LayerSpec = SLIDE) -> MemoryPlan:
    # both groups: 1 layer x 4 tokens x 128 B = 512 B small pages, 2 per 1 KiB large page;
    # group 0 (sliding) uses large pages 0-7 (page ids 0-15), group 1 (full) 8-15 (ids 16-31)
    return MemoryPlan((Group(0, slide, (0,), P, P * 128, 2), Group(1, FULL, (1,), P, P * 128, 2)), 1024, 16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: extra OpenMP threads only spin, and on a loaded 2-core
    machine they make these tests 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ministral")
    cfg = tf.MinistralConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=6,
                             max_position_embeddings=128, layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    tf.MinistralForCausalLM(cfg).save_pretrained(path)
    return load_model(path)


def _seq(rid, tokens, start, tables, sample=True, **kw):
    return SeqStep(rid, tuple(tokens), start, tables, sample, GREEDY, start + len(tokens), **kw)


PROMPT = [5, 17, 99, 3, 64, 12, 8, 77, 31, 2, 45, 101, 9, 60]     # 14 tokens


def _fresh_logits(model, tokens):
    plan = _plan()
    runner = ModelRunner(model, KVPool(plan), plan)
    n = -(-len(tokens) // P)
    out = runner.forward(StepPlan(0, (_seq("x", tokens, 0, (tuple(range(n)), tuple(range(16, 16 + n)))),)))
    return out.logits[0]


def test_empty_step_and_sampled_rows(model):
    plan = _plan()
    runner = ModelRunner(model, KVPool(plan), plan)
    empty = runner.forward(StepPlan(0, ()))
    assert isinstance(empty, RunnerOutput) and empty.req_ids == () and empty.logits.shape == (0, 128)
    # a step with page copies and no seqs still applies them
    runner.kv_pool.page_bytes(0)[3].fill_(7)
    moved = runner.forward(StepPlan(0, (), copies=(PageCopy(0, 3, 5),)))
    assert moved.req_ids == () and bool((runner.kv_pool.page_bytes(0)[5] == 7).all())
    runner.kv_pool.apply_zeros([(0, 3), (0, 5)])
    out = runner.forward(StepPlan(1, (
        _seq("a", PROMPT[:6], 0, ((0, 1), (16, 17)), sample=False),
        _seq("b", PROMPT, 0, ((2, 3, 4, 5), (18, 19, 20, 21))),
        _seq("c", PROMPT[:3], 0, ((6,), (22,))))))
    assert out.req_ids == ("b", "c") and out.logits.shape == (2, 128) and out.logits.dtype == torch.float32
    assert torch.allclose(out.logits[0], _fresh_logits(model, PROMPT), atol=1e-5)
    assert torch.allclose(out.logits[1], _fresh_logits(model, PROMPT[:3]), atol=1e-5)


def test_prefix_pages_shared_by_reference_and_by_copy(model):
    plan = _plan()
    runner = ModelRunner(model, KVPool(plan), plan)
    runner.forward(StepPlan(0, (_seq("a", PROMPT[:8], 0, ((0, 1), (16, 17)), sample=False),)))
    # b reuses a's first 8 tokens by reference: sliding pages 0-1 stay in the
    # window of position 8 (needs 3..8), full pages 16-17 are shared
    ref = runner.forward(StepPlan(1, (_seq("b", PROMPT[8:], 8, ((0, 1, 2, 3), (16, 17, 18, 19))),)))
    expected = _fresh_logits(model, PROMPT)
    assert torch.allclose(ref.logits[0], expected, atol=1e-5)
    # c gets copies of a's pages, and a's pages are zeroed in the same step:
    # copies apply before zeros, both before the forward
    copies = (PageCopy(0, 0, 8), PageCopy(0, 1, 9), PageCopy(1, 16, 24), PageCopy(1, 17, 25))
    zeros = ((0, 0), (0, 1), (1, 16), (1, 17))
    cp = runner.forward(StepPlan(2, (_seq("c", PROMPT[8:], 8, ((8, 9, 10, 11), (24, 25, 26, 27))),),
                                 copies=copies, zeros=zeros))
    assert torch.allclose(cp.logits[0], expected, atol=1e-5)
    assert runner.kv_pool.page_bytes(1)[16].abs().sum().item() == 0
    again = runner.forward(StepPlan(3, (_seq("d", PROMPT[8:], 8, ((0, 1, 12, 13), (16, 17, 28, 29))),)))
    assert not torch.allclose(again.logits[0], expected, atol=1e-3)     # zeroed prefix: wrong on purpose


def test_released_window_pages_are_not_needed(model):
    plan = _plan()
    runner = ModelRunner(model, KVPool(plan), plan)
    runner.forward(StepPlan(0, (_seq("a", PROMPT[:12], 0, ((0, 1, 2), (16, 17, 18)), sample=False),)))
    # next token at 12 needs 7..12: sliding page 0 (tokens 0-3) is released
    out = runner.forward(StepPlan(1, (_seq("a", PROMPT[12:], 12, ((NO_PAGE, 1, 2, 3), (16, 17, 18, 19))),)))
    assert torch.allclose(out.logits[0], _fresh_logits(model, PROMPT), atol=1e-5)


def test_refuses_what_it_cannot_run(model):
    plan = _plan()
    runner = ModelRunner(model, KVPool(plan), plan)
    tables = ((0,), (16,))
    bad = [(dict(images=(ImageRef(0, 2, "h"),)), "images need an encoder"),
           (dict(num_spec=2), "speculative decoding"),
           (dict(state_saves=(StateSave(0, 2, 3),)), "state_saves need recurrent layers")]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            runner.forward(StepPlan(0, (_seq("a", [1, 2, 3], 0, tables, **kw),)))
    with pytest.raises(ValueError, match="group 1 page 0 is NO_PAGE"):
        runner.forward(StepPlan(0, (_seq("a", [1], 4, ((1, 2), (NO_PAGE, 17))),)))


def test_plan_must_fit_the_model(model):
    with pytest.raises(ValueError, match="different plan"):
        ModelRunner(model, KVPool(_plan()), _plan())
    narrow = _plan(LayerSpec("sliding", "float32", 2, 8, window=4))
    with pytest.raises(ValueError, match=r"layer 0 attends with window=6 chunk=0 but plan group 0 "
                                         r"\(sliding\(window=4\)\) releases keys it needs"):
        ModelRunner(model, KVPool(narrow), narrow)
    heads = _plan(LayerSpec("sliding", "float32", 1, 16, window=6))
    with pytest.raises(ValueError, match="plan group 0 stores 1 kv heads x 16, model has 2 x 8"):
        ModelRunner(model, KVPool(heads), heads)
    # max-page style: the sliding layer kept in a full group is fine (masked, not released)
    wide = MemoryPlan((Group(0, FULL, (0, 1), P, P * 128, 1),), 1024, 8)
    runner = ModelRunner(model, KVPool(wide), wide)
    out = runner.forward(StepPlan(0, (_seq("a", PROMPT, 0, ((0, 1, 2, 3),)),)))
    assert torch.allclose(out.logits[0], _fresh_logits(model, PROMPT), atol=1e-5)
