"""shape_from_config for Bamba (the Mamba-2 hybrid): attention at
`attn_layer_indices`, Mamba-2 states (conv over x|B|C, SSM per head), and a
parameter count equal to the instantiated transformers model."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from jenga.memory.shapes.hf import shape_from_config

TEXT = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def config(**kw) -> T.BambaConfig:
    return T.BambaConfig(**{**TEXT, "attn_layer_indices": [2, 5], "mamba_n_heads": 8, "mamba_d_state": 16,
                            "mamba_n_groups": 2, **kw})


@pytest.mark.parametrize("kw", [{}, {"attention_bias": True, "mlp_bias": True, "mamba_proj_bias": True,
                                     "mamba_conv_bias": False, "tie_word_embeddings": True}])
def test_parameter_count_equals_transformers(kw):
    cfg = config(**kw)
    with torch.device("meta"):
        n = sum(p.numel() for p in T.BambaForCausalLM(cfg).parameters())
    assert shape_from_config(cfg.to_dict(), dtype="float32").weights_bytes == 4 * n


def test_layer_kinds_and_mamba2_state_shapes():
    shape = shape_from_config(config().to_dict(), dtype="bfloat16", ssm_dtype="float32")
    assert "".join(s.kind[0] for s in shape.layers) == "mmfmmf"
    m = shape.layers[0]
    # d_inner 128 + 2 groups x 2 (B, C) x 16; 8 heads of 16 channels x 16 states
    assert (m.conv_state, m.ssm_state, m.state_dtype) == ((192, 4), (8, 16, 16), "float32")
    assert m.state_bytes == 192 * 4 * 2 + 8 * 16 * 16 * 4
    full = shape.layers[2]
    assert (full.num_kv_heads, full.head_size, full.window) == (2, 16, 0)


def test_explicit_head_dim_and_inconsistent_heads():
    d = config().to_dict()
    assert shape_from_config({**d, "mamba_d_head": "auto"}).layers[0].ssm_state == (8, 16, 16)
    assert shape_from_config({**d, "mamba_n_heads": 4, "mamba_d_head": 32}).layers[0].ssm_state == (4, 32, 16)
    with pytest.raises(ValueError, match=r"mamba_n_heads=8 x mamba_d_head=12 != mamba_expand \* hidden_size=128"):
        shape_from_config({**d, "mamba_d_head": 12})


def test_jamba_keeps_mamba1_states():
    cfg = T.JambaConfig(**TEXT, attn_layer_period=3, attn_layer_offset=1, mamba_d_state=8)
    m = shape_from_config(cfg.to_dict(), dtype="float32").layers[0]
    assert (m.conv_state, m.ssm_state) == ((128, 4), (128, 8))
