"""Jamba (Mamba-1 + attention + MoE) against transformers: full-prefill
logits to 1e-4 through ModelRunner, state saves split inside a prefill chunk
and resumed from a copied checkpoint page, and the real engine (chunked
prefill, prefix caching with mamba checkpoints every 16 tokens, preemption
in a small pool, every allocator) token for token with `generate`."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from hybrid_helpers import BASE, SECOND_BATCH_HITS, check_parallel_sampling_shares_state, check_prefill_logits, \
    check_prefix_cache_run, check_saves_resume, check_small_pool_preempts, hf_greedy, make_checkpoint, prompts, \
    short_prompts
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


@pytest.mark.parametrize("allocator", sorted(SECOND_BATCH_HITS))
def test_engine_greedy_with_prefix_cache_matches_transformers(jamba, allocator):
    _, _, path, refs = jamba
    check_prefix_cache_run(path, refs, allocator)


def test_engine_preempts_in_a_small_pool_and_stays_exact(jamba):
    _, _, path, refs = jamba
    check_small_pool_preempts(path, refs, 61_440, 5)



def test_parallel_sampling_shares_the_prompt_state(jamba):
    _, _, path, refs = jamba
    check_parallel_sampling_shares_state(path, refs)
