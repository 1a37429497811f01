"""Every family against transformers: full-prefill logits to 1e-4, and
greedy decoding of three prompts batched together through ModelRunner
(chunked prefill, mixed prefill/decode steps, out-of-window pages released
and reused) token for token against `generate(do_sample=False)`.  The plan
comes from the memory side (`shape_from_config` of the saved config.json,
then `build_plan`, for jenga and for max-page, whose one merged full group
keeps every token of the sliding layers), so ModelRunner's plan check also
cross-checks the two views of each layer."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from jenga.engine.runner import ModelRunner
from jenga.model.attn_metadata import build_attn_metadata
from jenga.model.kv_pool import KVPool
from jenga.model.loader import load_model
from jenga.sched.step import StepPlan
from model_helpers import Pages, plan_for_folder, seq, tiny_checkpoint

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
        "original_max_position_embeddings": 128, "truncate": False}

LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}

CASES = {
    "llama": lambda: (tf.LlamaForCausalLM, tf.LlamaConfig(
        **BASE, num_hidden_layers=2, attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
        rope_parameters=LLAMA3)),
    "mistral": lambda: (tf.MistralForCausalLM, tf.MistralConfig(
        **BASE, num_hidden_layers=2, head_dim=16, sliding_window=8, tie_word_embeddings=False)),
    "ministral": lambda: (tf.MinistralForCausalLM, tf.MinistralConfig(
        **BASE, num_hidden_layers=3, head_dim=16, sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])),
    "qwen2": lambda: (tf.Qwen2ForCausalLM, tf.Qwen2Config(
        **BASE, num_hidden_layers=2, use_sliding_window=True, sliding_window=8, max_window_layers=1)),
    "qwen3": lambda: (tf.Qwen3ForCausalLM, tf.Qwen3Config(
        **BASE, num_hidden_layers=2, head_dim=16, tie_word_embeddings=False)),
    "gemma2": lambda: (tf.Gemma2ForCausalLM, tf.Gemma2Config(
        **BASE, num_hidden_layers=2, head_dim=16, sliding_window=8, query_pre_attn_scalar=24,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0)),
    "gemma3": lambda: (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig(
        **BASE, num_hidden_layers=3, head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
    "gpt_oss": lambda: (tf.GptOssForCausalLM, tf.GptOssConfig(
        **{**BASE, "intermediate_size": 32}, num_hidden_layers=2, head_dim=16, sliding_window=8,
        num_local_experts=4, num_experts_per_tok=2, rope_parameters=YARN)),
    # chunk 8: every prompt spans 2-4 chunks; layers alternate chunked RoPE
    # (L2 qk-norm) / global NoPE (temperature tuning from position 3 on),
    # MoE (shared + 2 of 4 routed) on the odd layers
    "llama4": lambda: (tf.Llama4ForCausalLM, tf.Llama4TextConfig(
        **{**BASE, "intermediate_size": 32}, intermediate_size_mlp=96, num_hidden_layers=4, head_dim=16,
        attention_chunk_size=8, no_rope_layer_interval=2, floor_scale=4, attn_scale=0.5,
        interleave_moe_layer_step=2, num_local_experts=4, num_experts_per_tok=2,
        rope_parameters=LLAMA3)),
}

PROMPT_LENS = (13, 22, 30)
NEW_TOKENS = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: extra OpenMP threads only spin, and on a loaded 2-core
    machine they make these tests 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    hf_cls, cfg = CASES[request.param]()
    hf = tiny_checkpoint(hf_cls, cfg, path)
    return hf, load_model(path), path


def _prompts(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(7)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in PROMPT_LENS]


def test_prefill_logits_match_transformers(pair):
    hf, model, path = pair
    plan = plan_for_folder(path)
    prompt = _prompts(256)[2]
    runner = ModelRunner(model, KVPool(plan), plan)
    pages = Pages(plan)
    step = StepPlan(0, (seq(pages, "a", prompt, 0, True),))
    meta = build_attn_metadata(step, plan, model.attn_layers)
    with torch.no_grad():
        ours = model(torch.tensor(prompt), meta.positions, meta, runner.kv_pool)
        ref = hf(torch.tensor([prompt]), position_ids=torch.arange(len(prompt))[None]).logits[0]
    assert ours.shape == ref.shape == (len(prompt), 256)
    assert (ours - ref).abs().max().item() < 1e-4


def _hf_greedy(hf, prompt: list[int]) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                          do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


# static and uniform give these models jenga's pages (one per-token width
# per model); max-page merges every layer into one full group
@pytest.mark.parametrize("allocator", ["jenga", "max-page"])
def test_batched_greedy_decode_matches_generate(pair, allocator):
    hf, model, path = pair
    plan = plan_for_folder(path, allocator)
    prompts = _prompts(256)
    runner = ModelRunner(model, KVPool(plan), plan)
    pages = Pages(plan)
    names = ["a", "b", "c"]
    done = {n: 0 for n in names}        # tokens already in the pool
    out: dict[str, list[int]] = {n: [] for n in names}
    # chunk splits: a and b start together; c joins one step later, so step
    # 2 mixes c's second chunk with a's and b's first decodes
    chunks = {n: [p[:len(p) // 2], p[len(p) // 2:]] for n, p in zip(names, prompts)}
    joins = {"a": 0, "b": 0, "c": 1}
    for step_id in range(NEW_TOKENS + 3):
        seqs = []
        for n in names:
            k = step_id - joins[n]
            if k < 0 or len(out[n]) >= NEW_TOKENS:
                continue
            toks = chunks[n][k] if k < 2 else [out[n][-1]]
            seqs.append(seq(pages, n, toks, done[n], sample=k >= 1))
        if not seqs:
            break
        res = runner.forward(StepPlan(step_id, tuple(seqs)))
        assert res.req_ids == tuple(s.req_id for s in seqs if s.sample)
        for s in seqs:
            done[s.req_id] = s.end
            pages.release(s.req_id, s.end)
        for rid, row in zip(res.req_ids, res.logits):
            out[rid].append(int(row.argmax()))
    for n, p in zip(names, prompts):
        assert out[n] == _hf_greedy(hf, p), n
    if any(g.spec.window for g in plan.groups):
        assert pages.released, "windows shorter than prompts must release pages"
