"""SpecRunner and the runner's speculative hooks on hand-built StepPlans:
verify rows equal transformers' logits, a step's sampled tokens and the
draft's proposals equal both models' greedy continuations in transformers,
proposals stop where the page tables or max_tokens end, and a model placed
at a layer offset touches only its own groups."""

from __future__ import annotations

import shutil

import pytest
import torch
from engine_helpers import tiny_checkpoint
from spec_helpers import random_draft

from jenga.engine.runner import ModelRunner
from jenga.engine.sampler import Sampler
from jenga.engine.spec_runner import SpecRunner, accept
from jenga.engine.spec_shape import merge_shapes
from jenga.memory.planner import build_plan
from jenga.memory.shapes.hf import shape_from_path
from jenga.model.kv_pool import KVPool
from jenga.model.loader import load_model
from jenga.sched.params import SamplingParams
from jenga.sched.step import PageCopy, SeqStep, StepPlan

P = 4
GREEDY = SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True)
PROMPT = [(11 * i + 5) % 250 for i in range(10)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    import transformers as tf
    target = tmp_path_factory.mktemp("target")
    hf_target = tiny_checkpoint("llama", target)
    rand = tmp_path_factory.mktemp("random")
    random_draft(rand)
    twin = tmp_path_factory.mktemp("twin") / "m"
    shutil.copytree(target, twin)
    hf = {"target": hf_target, "random": tf.LlamaForCausalLM.from_pretrained(rand).eval(), "twin": hf_target}
    return {"target": target, "random": rand, "twin": twin}, hf


def build(folders, draft: str, k: int = 3):
    paths, _ = folders
    shapes = [shape_from_path(paths[n], dtype="float32") for n in ("target", draft)]
    plan = build_plan(merge_shapes(*shapes), 1 << 20, page_tokens=P)
    pool = KVPool(plan)
    target = ModelRunner(load_model(paths["target"]), pool, plan)
    drafter = ModelRunner(load_model(paths[draft]), pool, plan, layer_offset=len(shapes[0].layers))
    return SpecRunner(target, drafter, Sampler(), k), plan


def tables(plan, num_tokens: int) -> tuple[tuple[int, ...], ...]:
    """Pages for one request: group g takes its pages from large pages
    [16g, 16g+16), so the groups never share bytes."""
    out = []
    for g in plan.groups:
        first = 16 * g.gid * g.per_large
        out.append(tuple(range(first, first + -(-num_tokens // g.page_tokens))))
    return tuple(out)


def hf_greedy(model, ids: list[int], n: int) -> list[int]:
    t = torch.tensor([ids])
    out = model.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_accept_stops_at_the_first_mismatch():
    assert accept((5, 6, 7), [5, 6, 7, 8]) == (5, 6, 7, 8)
    assert accept((5, 6, 7), [5, 9, 7, 8]) == (5, 9)
    assert accept((5, 6, 7), [4]) == (4,)
    assert accept((), [3]) == (3,)


def test_verify_rows_equal_transformers_logits(folders):
    spec, plan = build(folders, "random")
    t = tables(plan, 16)
    spec.target.forward(StepPlan(0, (SeqStep("a", tuple(PROMPT), 0, t, False, GREEDY, 10),)))
    window = (17, 42, 99)              # the last real token, then two drafts
    out = spec.target.forward(StepPlan(1, (SeqStep("a", window, 10, t, True, GREEDY, 10, num_spec=2),)),
                              verify=True)
    with torch.no_grad():
        ref = folders[1]["target"](torch.tensor([PROMPT + list(window)])).logits[0, -3:]
    assert out.req_ids == ("a",) and out.logits.shape == (3, 258)
    assert torch.allclose(out.logits, ref, atol=1e-4)
    with pytest.raises(ValueError, match=r"num_spec=2\) needs execute\(verify=True\)"):
        spec.target.forward(StepPlan(1, (SeqStep("a", window, 10, t, True, GREEDY, 10, num_spec=2),)))


@pytest.mark.parametrize("draft", ["random", "twin"])
def test_steps_equal_both_models_greedy_continuations(folders, draft):
    spec, plan = build(folders, draft, k=3)
    hf = folders[1]
    gold = hf_greedy(hf["target"], PROMPT, 16)
    t = tables(plan, 40)
    out = spec.execute(StepPlan(0, (SeqStep("a", tuple(PROMPT), 0, t, True, GREEDY, 10),)))
    assert out.sampled == {"a": (gold[0],)}
    known = PROMPT + [gold[0]]
    accepted_total = 0
    for step in range(1, 4):
        drafts = out.draft_tokens["a"]
        assert list(drafts) == hf_greedy(hf[draft], known, 3)
        seq = SeqStep("a", (known[-1],) + drafts, len(known) - 1, t, True, GREEDY, 10, num_spec=3)
        out = spec.execute(StepPlan(step, (seq,)))
        got = out.sampled["a"]
        n_out = len(known) - 10
        assert list(got) == gold[n_out:n_out + len(got)]
        assert got == accept(drafts, gold[n_out:n_out + 4])
        accepted_total += len(got) - 1
        known += list(got)
    # the twin proposes exactly the target's tokens; the random draft never does here
    assert accepted_total == (9 if draft == "twin" else 0)


def test_proposals_stop_where_the_page_tables_end(folders):
    spec, plan = build(folders, "random", k=3)
    prompt = tuple(PROMPT + [1, 2])                       # 12 tokens: three full pages
    out = spec.execute(StepPlan(0, (SeqStep("a", prompt, 0, tables(plan, 12), True, GREEDY, 12),)))
    assert len(out.sampled["a"]) == 1 and out.draft_tokens == {}
    prompt = tuple(PROMPT + [1, 2, 3, 4])                 # 14 tokens: the 4th page leaves 2 positions
    out = spec.execute(StepPlan(0, (SeqStep("b", prompt, 0, tables(plan, 16), True, GREEDY, 14),)))
    assert len(out.draft_tokens["b"]) == 2
    last = SamplingParams(max_tokens=1, temperature=0.0)
    out = spec.execute(StepPlan(0, (SeqStep("c", tuple(PROMPT), 0, tables(plan, 20), True, last, 10),)))
    assert len(out.sampled["c"]) == 1 and out.draft_tokens == {}   # it ends now: nothing to propose


def test_a_mid_prefill_chunk_feeds_the_draft_too(folders):
    """The draft prefills the same chunks, so after the last chunk its
    proposals equal those of a one-chunk prefill."""
    spec, plan = build(folders, "random", k=2)
    t = tables(plan, 20)
    spec.execute(StepPlan(0, (SeqStep("a", tuple(PROMPT[:6]), 0, t, False, GREEDY, 10),)))
    out = spec.execute(StepPlan(1, (SeqStep("a", tuple(PROMPT[6:]), 6, t, True, GREEDY, 10),)))
    whole, _ = build(folders, "random", k=2)
    ref = whole.execute(StepPlan(0, (SeqStep("a", tuple(PROMPT), 0, t, True, GREEDY, 10),)))
    assert out.sampled == ref.sampled and out.draft_tokens == ref.draft_tokens


def test_a_model_at_an_offset_touches_only_its_groups(folders):
    spec, plan = build(folders, "random")
    pool, draft = spec.target.kv_pool, spec.draft
    assert [g.spec.model for g in plan.groups] == ["main", "draft"] and draft.layer_offset == 2
    t = tables(plan, 12)
    pool.buffer.zero_()       # the pool starts unzeroed: count only the bytes the draft writes
    draft.forward(StepPlan(0, (SeqStep("a", tuple(PROMPT), 0, t, True, GREEDY, 10),)))
    assert int(pool.buffer.count_nonzero()) > 0
    assert int(pool.page_bytes(0)[list(t[0])].count_nonzero()) == 0         # the target's pages
    # the draft's: 10 tokens of K and V, 1 kv head x 16 fp32 each, all written
    assert int(pool.page_bytes(1)[list(t[1])].view(torch.float32).count_nonzero()) == 10 * 2 * 16
    with pytest.raises(ValueError, match="layer 0: plan group 0 stores 2 kv heads x 16, model has 1 x 16"):
        ModelRunner(draft.model, pool, plan)


def test_a_draft_with_recurrent_layers_is_refused(folders):
    from jenga.memory.spec import ModelShape, mamba
    paths, _ = folders
    target, draft = (shape_from_path(paths[n], dtype="float32") for n in ("target", "random"))
    hybrid = ModelShape("hybrid", draft.layers + (mamba((64, 4), (64, 16), "float32"),), draft.max_context)
    plan = build_plan(merge_shapes(target, hybrid), 1 << 20, page_tokens=P)
    pool = KVPool(plan)
    runners = (ModelRunner(load_model(paths["target"]), pool, plan),
               ModelRunner(load_model(paths["random"]), pool, plan, layer_offset=2))
    with pytest.raises(ValueError, match=r"draft plan layers \[3\] keep state other than attention K/V"):
        SpecRunner(*runners, Sampler(), 2)


def test_spec_runner_refuses_mismatched_runners(folders):
    spec, plan = build(folders, "random")
    with pytest.raises(ValueError, match="overlap the target's"):
        SpecRunner(spec.target, spec.target, Sampler(), 2)
    with pytest.raises(ValueError, match="num_speculative_tokens must be >= 1"):
        SpecRunner(spec.target, spec.draft, Sampler(), 0)
    other, _ = build(folders, "random")
    with pytest.raises(ValueError, match="share one KV pool and plan"):
        SpecRunner(spec.target, other.draft, Sampler(), 2)


def test_a_step_with_only_page_copies_applies_them(folders):
    spec, _ = build(folders, "random", k=2)
    pages = spec.target.kv_pool.page_bytes(0)
    pages[1].fill_(9)
    out = spec.execute(StepPlan(0, (), copies=(PageCopy(0, 1, 2),)))
    assert out.sampled == {} and out.draft_tokens == {} and bool((pages[2] == 9).all())
