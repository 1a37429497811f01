"""Layers against transformers: RoPE variants, RMSNorm flavours, gpt-oss MoE."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from jenga.model.layers import MoE, RMSNorm, Rope, activation, apply_rope

ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 50000.0, "factor": 4.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "yarn_truncated": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0,
                       "original_max_position_embeddings": 128},
    "yarn_gpt_oss": {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                     "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096},
    "yarn_mscale": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "mscale": 1.0,
                    "mscale_all_dim": 0.5, "original_max_position_embeddings": 256},
}


@pytest.mark.parametrize("name", sorted(ROPES))
def test_rope_frequencies_match_transformers(name):
    cfg = tf.LlamaConfig(hidden_size=128, num_attention_heads=2, max_position_embeddings=8192,
                         rope_parameters=dict(ROPES[name]))
    ref_inv, ref_scale = (ROPE_INIT_FUNCTIONS[cfg.rope_parameters["rope_type"]](cfg, "cpu")
                          if name != "default" else (None, 1.0))
    rope = Rope(64, dict(cfg.rope_parameters), 8192)
    if ref_inv is None:
        ref_inv = 1.0 / 10000.0 ** (torch.arange(0, 64, 2).float() / 64)
    assert torch.allclose(rope.inv_freq, ref_inv, rtol=1e-6, atol=0)
    assert rope.scaling == pytest.approx(ref_scale, rel=1e-9)
    if name != "default":
        assert not torch.allclose(rope.inv_freq, 1.0 / ROPES[name]["rope_theta"] ** (torch.arange(0, 64, 2) / 64))


def test_apply_rope_matches_transformers():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(5, 4, 16, generator=g), torch.randn(5, 2, 16, generator=g)
    rope = Rope(16, ROPES["yarn_gpt_oss"], 4096)
    cos, sin = rope.cos_sin(torch.tensor([0, 3, 7, 100, 2000]), torch.float32)
    hf_sin = torch.cat((-sin[:, :8], sin[:, 8:]), dim=-1)     # ours comes with its first half negated
    assert torch.equal(hf_sin[:, :8], hf_sin[:, 8:])
    ref_q, ref_k = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos[None], hf_sin[None])
    assert torch.allclose(apply_rope(q, cos, sin), ref_q[0].transpose(0, 1), atol=1e-6)
    assert torch.allclose(apply_rope(k, cos, sin), ref_k[0].transpose(0, 1), atol=1e-6)


def test_unsupported_rope_and_activation_raise():
    with pytest.raises(ValueError, match="unsupported rope_type 'longrope'"):
        Rope(16, {"rope_type": "longrope", "rope_theta": 1.0}, 16)
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        Rope(16, {"rope_type": "default", "rope_theta": 1.0, "partial_rotary_factor": 0.5}, 16)
    with pytest.raises(ValueError, match="unknown activation 'swish2'"):
        activation("swish2")


def test_rms_norm_flavours():
    x = torch.tensor([[1.0, -2.0, 2.0, 4.0]])               # mean square 25/4 -> rms 2.5
    llama = RMSNorm(4, 0.0)
    llama.weight = torch.nn.Parameter(torch.tensor([1.0, 2.0, 0.5, 0.0]))
    gemma = RMSNorm(4, 0.0, offset=1.0)
    gemma.weight = torch.nn.Parameter(torch.tensor([0.0, 1.0, -0.5, -1.0]))
    assert torch.allclose(llama(x), torch.tensor([[0.4, -1.6, 0.4, 0.0]]))
    assert torch.allclose(gemma(x), torch.tensor([[0.4, -1.6, 0.4, 0.0]]))


def test_moe_matches_gpt_oss_mlp():
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP
    cfg = tf.GptOssConfig(hidden_size=32, intermediate_size=24, num_local_experts=5, num_experts_per_tok=2)
    torch.manual_seed(0)
    ref = GptOssMLP(cfg)
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = MoE(32, 24, 5, 2, cfg.swiglu_alpha, cfg.swiglu_limit)
    for name, p in ref.named_parameters():
        mod, _, attr = name.rpartition(".")
        ours.get_submodule(mod)._parameters[attr] = torch.nn.Parameter(p.detach().clone())
    x = torch.randn(7, 32) * 3
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x[None])[0][0], atol=1e-5)
