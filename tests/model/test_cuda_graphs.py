"""Decode CUDA graphs, the parts a CPU can check: the capture sizes and the
bucket a batch pads to, the engine's switch, the static buffers a step fills
(exact values, padding rows included), and the padded decode itself, which
runs eagerly here over the same buffers a capture records, through the
Triton path under TRITON_INTERPRET=1, token for token against transformers.
Capture and replay need a GPU: scripts/gpu_check_attention.py runs them."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

pytest.importorskip("triton")

from jenga.engine.runner import ModelRunner
from jenga.model.cuda_graphs import (CudaGraphConfig, DecodeInputs, bucket_for, capture_sizes, graph_config,
                                     unsupported_reason)
from jenga.model.families import model_class
from jenga.model.kv_pool import KVPool
from jenga.model.loader import load_model
from jenga.sched.step import NO_PAGE, SeqStep, StepPlan
from model_helpers import GREEDY, Pages, plan_for_folder, plan_from_specs, seq, spec_for, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, num_hidden_layers=2, max_position_embeddings=256)


def test_capture_sizes_follow_the_ladder_up_to_max_num_seqs():
    assert capture_sizes(1) == (1,)
    assert capture_sizes(3) == (1, 2, 4)
    assert capture_sizes(8) == (1, 2, 4, 8)
    assert capture_sizes(20) == (1, 2, 4, 8, 16, 24)
    assert capture_sizes(64) == (1, 2, 4) + tuple(range(8, 65, 8))


def test_a_batch_pads_to_the_smallest_size_that_holds_it():
    sizes = (1, 2, 4, 8, 16)
    assert [bucket_for(b, sizes) for b in (1, 2, 3, 4, 5, 9, 16)] == [1, 2, 4, 4, 8, 16, 16]
    assert bucket_for(17, sizes) is None


def test_config_names_its_bad_field():
    with pytest.raises(ValueError, match="max_num_seqs"):
        CudaGraphConfig(0, 64)
    with pytest.raises(ValueError, match="max_model_len"):
        CudaGraphConfig(4, True)


def test_engine_switch():
    llama = model_class("llama")(tf.LlamaConfig(**TINY))
    cuda = torch.device("cuda")         # a device object only: nothing runs on it
    assert graph_config(llama, cuda, enforce_eager=False, max_num_seqs=8, max_model_len=64) == CudaGraphConfig(8, 64)
    assert graph_config(llama, cuda, enforce_eager=True, max_num_seqs=8, max_model_len=64) is None
    assert graph_config(llama, torch.device("cpu"), enforce_eager=False, max_num_seqs=8, max_model_len=64) is None
    oss = model_class("gpt_oss")(tf.GptOssConfig(**{**TINY, "intermediate_size": 16}, num_local_experts=2,
                                                 num_experts_per_tok=1, sliding_window=8))
    assert "MoE" in unsupported_reason(oss)
    assert graph_config(oss, cuda, enforce_eager=False, max_num_seqs=8, max_model_len=64) is None
    assert unsupported_reason(llama) is None


def test_fill_writes_a_padded_decode_batch():
    # group 0 sliding (window 4), group 1 full; pages of 4 tokens
    plan = plan_from_specs([spec_for(2, 8, 4, 0), spec_for(2, 8, 0, 0)], 4, 8)
    inputs = DecodeInputs(plan, (0, 1), 4, 16, torch.device("cpu"))
    seqs = (SeqStep("a", (7,), 9, ((NO_PAGE, 3, 5), (1, 2, 6)), True, GREEDY, 9),
            SeqStep("b", (8,), 2, ((4,), (0,)), True, GREEDY, 2),
            SeqStep("c", (9,), 4, ((NO_PAGE, 2), (3, 4)), True, GREEDY, 4))
    step = StepPlan(0, seqs)
    assert inputs.fits(step) and bucket_for(3, capture_sizes(4)) == 4
    inputs.fill(step, 4)
    inputs.upload()
    v = inputs.views
    assert v["input_ids"].tolist() == [7, 8, 9, 0]
    assert v["positions"].tolist() == [9, 2, 4, 0]
    assert v["query_start"].tolist() == [0, 1, 2, 3, 4]
    assert v["slot_pages0"].tolist() == [5, 4, 2, -1]          # padding writes nowhere
    assert v["slot_pages1"].tolist() == [6, 0, 4, -1]
    assert v["slot_offsets0"].tolist() == [1, 2, 0, 0]
    assert v["slot_mapping1"].tolist() == [25, 2, 16, -1]
    assert v["context_lens0"].tolist() == [10, 3, 5, 1]
    assert v["page_table0"].tolist() == [[0, 3, 5, 0], [4, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]]
    assert inputs.dev_valid[0].tolist()[0] == [False, True, True, False]
    meta = inputs.metadata(4, "triton")
    assert meta.groups[1].query_start == (0, 1, 2, 3, 4) and meta.groups[1].batches == ()
    # a later, smaller step leaves no row of the earlier one behind
    inputs.fill(StepPlan(1, seqs[1:2]), 1)
    inputs.upload()
    assert v["slot_pages0"].tolist()[:1] == [4] and v["page_table0"][0].tolist() == [4, 0, 0, 0]


def test_only_decode_steps_within_the_buffers_fit():
    plan = plan_from_specs([spec_for(2, 8, 0, 0)], 4, 8)
    inputs = DecodeInputs(plan, (0,), 2, 8, torch.device("cpu"))
    one = SeqStep("a", (1,), 3, ((0,),), True, GREEDY, 3)
    assert inputs.fits(StepPlan(0, (one,)))
    assert not inputs.fits(StepPlan(0, (one._replace(token_ids=(1, 2)),)))             # a prefill chunk
    assert not inputs.fits(StepPlan(0, (one._replace(start=8, page_tables=((0, 1, 2),)),)))  # past 8 tokens
    assert not inputs.fits(StepPlan(0, (one, one._replace(req_id="b"), one._replace(req_id="c"))))
    assert not inputs.fits(StepPlan(0, (one._replace(num_spec=1),)))


def _greedy(hf, prompt, n):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_padded_decode_matches_transformers(tmp_path):
    """Gemma-2 (sliding window 8 on pages of 4, so pages are released and
    reused; soft-capping): 3 prompts prefilled eagerly by the Triton path,
    then 6 decode steps of 3 seqs through the 4-row graph buffers."""
    cfg = tf.Gemma2Config(**TINY, sliding_window=8, query_pre_attn_scalar=8, attn_logit_softcapping=5.0,
                          final_logit_softcapping=3.0)
    hf = tiny_checkpoint(tf.Gemma2ForCausalLM, cfg, tmp_path)
    model = load_model(tmp_path)
    plan = plan_for_folder(tmp_path)
    runner = ModelRunner(model, KVPool(plan), plan, backend="triton", cuda_graphs=CudaGraphConfig(4, 64))
    prompts = {"a": [3, 5, 7, 11, 13], "b": list(range(20, 31)), "c": list(range(40, 53))}
    pages, done, out = Pages(plan), {}, {r: [] for r in prompts}
    for step_id in range(7):
        seqs = tuple(seq(pages, r, p if step_id == 0 else [out[r][-1]], done.get(r, 0), True)
                     for r, p in prompts.items())
        res = runner.forward(StepPlan(step_id, seqs))
        for s, row in zip(seqs, res.logits):
            done[s.req_id] = s.end
            pages.release(s.req_id, s.end)
            out[s.req_id].append(int(row.argmax()))
    assert runner.graphs.runs == 6 and runner.graphs.captured == ()
    assert pages.released
    for r, p in prompts.items():
        assert out[r] == _greedy(hf, p, 7), r
