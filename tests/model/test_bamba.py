"""Bamba (Mamba-2 + attention) against transformers: full-prefill logits to
1e-4 through ModelRunner, state saves splitting the SSD scan inside a
prefill chunk and resumed from a copied checkpoint page, and the real engine
(chunked prefill, prefix caching with mamba checkpoints every 16 tokens,
preemption in a small pool, every allocator) token for token with
`generate`."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from hybrid_helpers import BASE, SECOND_BATCH_HITS, check_prefill_logits, check_prefix_cache_run, \
    check_saves_resume, check_small_pool_preempts, hf_greedy, make_checkpoint, prompts, short_prompts
from jenga.model.families.bamba import BambaForCausalLM
from jenga.model.loader import load_model


def config() -> tf.BambaConfig:
    # layers: mamba2, attention, mamba2, attention; 4 heads of 32 over d_inner 128, 2 groups of B/C;
    # SSD chunks of 8 tokens so prompts span several chunks
    return tf.BambaConfig(**BASE, num_hidden_layers=4, attn_layer_indices=[1, 3], mamba_n_heads=4,
                          mamba_d_state=8, mamba_n_groups=2, mamba_d_conv=4, mamba_chunk_size=8,
                          attention_bias=True)


@pytest.fixture(scope="module")
def bamba(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)     # tiny matmuls: extra OpenMP threads only spin
    path = tmp_path_factory.mktemp("bamba")
    hf = make_checkpoint(tf.BambaForCausalLM, config(), path)
    refs = [hf_greedy(hf, p) for p in prompts() + short_prompts()]
    yield hf, load_model(path), path, refs
    torch.set_num_threads(n)


def test_layout_follows_the_config(bamba):
    _, model, _, _ = bamba
    assert isinstance(model, BambaForCausalLM)
    assert model.attn_layers == (1, 3) and model.state_layers == (0, 2)
    # conv over x|B|C: 128 + 2 groups x 2 x 8; SSM: 4 heads x 32 x 8
    assert model.layer_state_shapes() == {0: ((160, 4), (4, 32, 8)), 2: ((160, 4), (4, 32, 8))}
    assert model.model.layers[1].self_attn.rotary_dim == 8     # half of head_dim 16
    assert model.model.layers[1].self_attn.q_proj.bias is not None


def test_prefill_logits_match_transformers(bamba):
    hf, model, path, _ = bamba
    check_prefill_logits(hf, model, path, prompts()[2])


def test_state_saves_resume_exactly(bamba):
    hf, model, path, _ = bamba
    check_saves_resume(hf, model, path, prompts()[1][:30])


@pytest.mark.parametrize("allocator", sorted(SECOND_BATCH_HITS))
def test_engine_greedy_with_prefix_cache_matches_transformers(bamba, allocator):
    _, _, path, refs = bamba
    check_prefix_cache_run(path, refs, allocator)


def test_engine_preempts_in_a_small_pool_and_stays_exact(bamba):
    _, _, path, refs = bamba
    check_small_pool_preempts(path, refs, 79_872, 3)

