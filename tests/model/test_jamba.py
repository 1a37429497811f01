"""Jamba (Mamba-1 + attention + MoE) against transformers: full-prefill
logits to 1e-4 through ModelRunner, state saves split inside a prefill chunk
and resumed from a copied checkpoint page, and the real engine (chunked
prefill, prefix caching with mamba checkpoints every 16 tokens, preemption
in a small pool, every allocator) token for token with `generate`."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from hybrid_helpers import BASE, check_prefill_logits, check_saves_resume, engine, hf_greedy, make_checkpoint, \
    prompts, run, short_prompts
from jenga.model.families.jamba import JambaForCausalLM, JambaMoE
from jenga.model.loader import load_model


def config() -> tf.JambaConfig:
    # layers: mamba, attention+MoE, mamba, attention+MoE
    return tf.JambaConfig(**BASE, num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1,
                          expert_layer_period=2, expert_layer_offset=1, num_experts=4, num_experts_per_tok=2,
                          mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=8)


@pytest.fixture(scope="module")
def jamba(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)     # tiny matmuls: extra OpenMP threads only spin
    path = tmp_path_factory.mktemp("jamba")
    hf = make_checkpoint(tf.JambaForCausalLM, config(), path)
    refs = [hf_greedy(hf, p) for p in prompts() + short_prompts()]
    yield hf, load_model(path), path, refs
    torch.set_num_threads(n)


def test_layout_follows_the_config(jamba):
    _, model, _, _ = jamba
    assert isinstance(model, JambaForCausalLM)
    assert model.attn_layers == (1, 3) and model.state_layers == (0, 2)
    assert model.layer_state_shapes() == {0: ((128, 4), (128, 8)), 2: ((128, 4), (128, 8))}
    assert [type(layer.feed_forward) is JambaMoE for layer in model.model.layers] == [False, True, False, True]


def test_prefill_logits_match_transformers(jamba):
    hf, model, path, _ = jamba
    check_prefill_logits(hf, model, path, prompts()[2])


def test_state_saves_resume_exactly(jamba):
    hf, model, path, _ = jamba
    check_saves_resume(hf, model, path, prompts()[1][:30])


# Hit tokens of the second batch (prompts of 23, 57, 63 tokens) in a roomy
# pool.  jenga: checkpoints every 16 tokens and at each prompt's end rounded
# down to the 16-token page: 16 + 48 + 48.  uniform (vLLM v1): 32-token
# blocks: 16 + 32 + 16 rounded to blocks = 0 + 32 + 32.  max-page (vLLM v0):
# no checkpoints, no hits.  static caps the mamba group at a fixed share of
# the pool (a few large pages), where checkpoints evict one another: at most
# jenga's hits, how many depends on the order the generated tokens evict.
SECOND_BATCH_HITS = {"jenga": 112, "uniform": 64, "static": range(1, 113), "max-page": 0}


@pytest.mark.parametrize("allocator", sorted(SECOND_BATCH_HITS))
def test_engine_greedy_with_prefix_cache_matches_transformers(jamba, allocator):
    _, _, path, refs = jamba
    eng = engine(path, allocator=allocator, kv_cache_memory=4 << 20)
    assert run(eng, prompts(), "a") == refs[:3]
    first = eng.stats().hit_tokens
    assert run(eng, prompts(), "b") == refs[:3]
    hits, expected = eng.stats().hit_tokens - first, SECOND_BATCH_HITS[allocator]
    assert hits in expected if isinstance(expected, range) else hits == expected
    assert eng.stats().kv_used_bytes == 0


def test_engine_preempts_in_a_small_pool_and_stays_exact(jamba):
    # 4-token attention pages make the large page small enough that the pool
    # holds the three prompts at admission but not their 32 new tokens each
    _, _, path, refs = jamba
    eng = engine(path, kv_cache_memory=61_440, page_tokens=4)
    assert eng.plan.num_large_pages == 5
    assert run(eng, short_prompts(), "a") == refs[3:]
    assert eng.stats().num_preemptions > 0
