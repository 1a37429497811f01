"""Llama 4 through the real engine, token for token against transformers:
chunked-local layers (chunk 8, two 4-token pages) alternate with global NoPE
layers.  Prompts span 3-8 chunks and are prefilled 24 tokens a step; a
prefix hit that ends inside a later chunk takes only that chunk's page of
the chunked group; the chunked group's pages are counted exactly after
every step; a small pool preempts; a multimodal (Scout-style) checkpoint
serves its text model.  (Prefill logits and ModelRunner-level batched
decoding of the text checkpoint are in test_families.py.)"""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from hybrid_helpers import (BASE, ENGINE_GREEDY, check_prefill_logits, engine, hf_greedy, make_checkpoint, prompts,
                            run, run_outputs, short_prompts)
from model_helpers import tiny_checkpoint
from jenga.model.loader import load_model
from jenga.sched.step import NO_PAGE

pytestmark = pytest.mark.usefixtures("one_thread")

CHUNK, PAGE = 8, 4
CONFIG = dict(BASE, intermediate_size=32, intermediate_size_mlp=96, num_hidden_layers=4, head_dim=16,
              attention_chunk_size=CHUNK, no_rope_layer_interval=2, floor_scale=4, attn_scale=0.5,
              interleave_moe_layer_step=2, num_local_experts=4, num_experts_per_tok=2)


def hit_prompt() -> list[int]:
    """The 63-token prompt's first 46 tokens, then 9 others: the longest
    page-aligned hit is 44 tokens, inside chunk [40, 48)."""
    g = torch.Generator().manual_seed(11)
    return prompts()[2][:46] + torch.randint(0, 256, (9,), generator=g).tolist()


@pytest.fixture(scope="module")
def llama4(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama4")
    hf = make_checkpoint(tf.Llama4ForCausalLM, tf.Llama4TextConfig(**CONFIG), path)
    torch.set_num_threads(1)
    refs = {tuple(p): hf_greedy(hf, p) for p in prompts() + short_prompts() + [hit_prompt()]}
    return path, refs


def chunked_gid(eng) -> int:
    (gid,) = [g.gid for g in eng.plan.groups if g.spec.chunk]
    return gid


@pytest.mark.parametrize("allocator", ["jenga", "uniform", "max-page"])
def test_engine_matches_transformers_over_many_chunks(llama4, allocator):
    path, refs = llama4
    eng = engine(path, allocator=allocator, page_tokens=PAGE)
    assert run(eng, prompts(), "a") == [refs[tuple(p)] for p in prompts()]
    assert eng.stats().kv_used_bytes == 0


def test_chunked_group_holds_only_the_current_chunk(llama4):
    """One 57-token prompt prefilled 24 tokens a step, then 31 decodes:
    after each step with c tokens computed the chunked group's table covers
    ceil(c / 4) pages of which it holds only those of the chunk the next
    token starts in (c // 8 * 8 on): 0 right after a chunk boundary, never
    more than 2; finished chunks are released at once."""
    path, refs = llama4
    eng = engine(path, page_tokens=PAGE, enable_prefix_caching=False)
    prompt = prompts()[1]
    seen = []

    def watch(e):
        table = e.manager.page_tables("p0")[chunked_gid(e)]
        seen.append((len(table), sum(p != NO_PAGE for p in table)))

    (out,) = run_outputs(eng, [prompt], "p", watch)
    assert list(out.outputs[0].token_ids) == refs[tuple(prompt)]
    computed = [24, 48] + list(range(57, 57 + ENGINE_GREEDY.max_tokens - 1))
    pages = [-(-c // PAGE) for c in computed]
    assert seen == [(n, n - c // CHUNK * CHUNK // PAGE) for n, c in zip(pages, computed)]
    assert seen[:4] == [(6, 0), (12, 0), (15, 1), (15, 1)] and max(h for _, h in seen) == 2


def test_prefix_hit_inside_a_later_chunk_takes_only_that_chunk(llama4):
    path, refs = llama4
    eng = engine(path, page_tokens=PAGE)
    long = prompts()[2]
    assert run(eng, [long], "warm") == [refs[tuple(long)]]
    gid, first = chunked_gid(eng), []

    def watch(e):
        if not first:   # the tables right after the hit's first step
            first.extend(e.manager.page_tables("h0"))

    (out,) = run_outputs(eng, [hit_prompt()], "h", watch)
    assert out.num_cached_tokens == 44
    assert list(out.outputs[0].token_ids) == refs[tuple(hit_prompt())]
    # full groups reference pages 0..10 of the hit; the chunked group only
    # page 10 (tokens 40..43); the rest of chunk [40, 48) is computed
    chunked = first[gid]
    assert all(p == NO_PAGE for p in chunked[:10]) and chunked[10] != NO_PAGE
    assert all(all(p != NO_PAGE for p in t[:11]) for g, t in enumerate(first) if g != gid)


def test_small_pool_preempts_and_stays_exact(llama4):
    path, refs = llama4
    eng = engine(path, page_tokens=PAGE, kv_cache_memory=64 * 1024, enable_prefix_caching=False)
    outs = run(eng, short_prompts() * 2, "s")
    assert eng.stats().num_preemptions > 0
    assert outs == [refs[tuple(p)] for p in short_prompts() * 2]


def test_multimodal_checkpoint_serves_its_text_model(tmp_path):
    """A `llama4` folder (Llama4ForConditionalGeneration, as Scout and
    Maverick ship): the vision weights are skipped, the text logits match."""
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=56,
                  patch_size=14, vision_output_dim=40, projector_input_dim=40, projector_output_dim=40)
    cfg = tf.Llama4Config(text_config=CONFIG, vision_config=vision)
    hf = tiny_checkpoint(tf.Llama4ForConditionalGeneration, cfg, tmp_path)
    check_prefill_logits(hf, load_model(tmp_path), tmp_path, prompts()[1])
