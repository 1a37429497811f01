"""shape_from_config / shape_from_path against transformers itself: layer
kinds agree with the config classes' `layer_types`, parameter counts equal
those of the instantiated (meta-device) models, bytes per token are exact."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T

from jenga.memory.shapes.hf import shape_from_config, shape_from_path
from jenga.memory.spec import LayerSpec

TEXT = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
CLIP = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=2, image_size=56, patch_size=14)
SIGLIP = dict(CLIP, model_type="siglip_vision_model")
KIND = {"full_attention": "full", "sliding_attention": "sliding", "linear_attention": "mamba",
        "chunked_attention": "chunked"}
LLAMA4 = dict(TEXT, intermediate_size_mlp=80, num_local_experts=4, num_experts_per_tok=1,
              interleave_moe_layer_step=2, attention_chunk_size=32)


def n_params(config, cls) -> int:
    with torch.device("meta"):
        model = cls(config)
    return sum(p.numel() for p in model.parameters())


def mllama_config():
    return T.MllamaConfig(
        text_config=dict(TEXT, cross_attention_layers=[1, 4]),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=56, patch_size=14, max_num_tiles=4, vision_output_dim=64,
                           intermediate_layers_indices=[0]))


CASES = {
    "llama": (lambda: T.LlamaConfig(**TEXT), T.LlamaForCausalLM),
    "llama-biased-tied": (lambda: T.LlamaConfig(**TEXT, attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
                          T.LlamaForCausalLM),
    "mistral": (lambda: T.MistralConfig(**TEXT, sliding_window=32), T.MistralForCausalLM),
    "ministral": (lambda: T.MinistralConfig(**TEXT, head_dim=16, sliding_window=32, layer_types=[
        "sliding_attention", "sliding_attention", "full_attention"] * 2), T.MinistralForCausalLM),
    "qwen2": (lambda: T.Qwen2Config(**TEXT, use_sliding_window=True, sliding_window=32, max_window_layers=4),
              T.Qwen2ForCausalLM),
    "qwen3": (lambda: T.Qwen3Config(**TEXT, head_dim=24), T.Qwen3ForCausalLM),
    "gemma2": (lambda: T.Gemma2Config(**TEXT, head_dim=16, sliding_window=32), T.Gemma2ForCausalLM),
    "gemma3_text": (lambda: T.Gemma3TextConfig(**TEXT, head_dim=16, sliding_window=32, sliding_window_pattern=3),
                    T.Gemma3ForCausalLM),
    "gpt_oss": (lambda: T.GptOssConfig(**TEXT, head_dim=16, sliding_window=32, num_local_experts=4,
                                       num_experts_per_tok=2), T.GptOssForCausalLM),
    "jamba": (lambda: T.JambaConfig(**TEXT, num_experts=4, num_experts_per_tok=2, attn_layer_period=3,
                                    attn_layer_offset=1, mamba_d_state=8, mamba_dt_rank=8), T.JambaForCausalLM),
    "llama4_text": (lambda: T.Llama4TextConfig(**LLAMA4), T.Llama4ForCausalLM),
    "llama4": (lambda: T.Llama4Config(
        text_config=LLAMA4, vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=56, patch_size=14,
                                               vision_output_dim=40, projector_input_dim=40,
                                               projector_output_dim=40)),
               T.Llama4ForConditionalGeneration),
    "mllama": (mllama_config, T.MllamaForConditionalGeneration),
    "llava": (lambda: T.LlavaConfig(text_config=dict(TEXT, model_type="llama"), vision_config=CLIP),
              T.LlavaForConditionalGeneration),
    "llava-multilayer": (lambda: T.LlavaConfig(text_config=dict(TEXT, model_type="llama"), vision_config=CLIP,
                                               vision_feature_layer=[-2, -1]), T.LlavaForConditionalGeneration),
    "llava_onevision": (lambda: T.LlavaOnevisionConfig(text_config=dict(TEXT, model_type="qwen2"),
                                                       vision_config=SIGLIP), T.LlavaOnevisionForConditionalGeneration),
    "gemma3": (lambda: T.Gemma3Config(text_config=dict(TEXT, model_type="gemma3_text", head_dim=16),
                                      vision_config=dict(SIGLIP, image_size=64, patch_size=8), mm_tokens_per_image=4),
               T.Gemma3ForConditionalGeneration),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_weights_equal_transformers_parameter_count(case):
    make, cls = CASES[case]
    config = make()
    shape = shape_from_config(config.to_dict(), dtype="float32")
    assert shape.weights_bytes == 4 * n_params(config, cls)


@pytest.mark.parametrize("case", ["mistral", "ministral", "qwen2", "gemma2", "gemma3_text", "gpt_oss", "jamba",
                                  "llama4_text"])
def test_layer_kinds_follow_transformers_layer_types(case):
    config = CASES[case][0]()
    # a config.json written by older transformers has no layer_types: the family rule must rebuild them
    d = {k: v for k, v in config.to_dict().items() if k != "layer_types" or case == "ministral"}
    shape = shape_from_config(d)
    expected = getattr(config, "layer_types", None) or ["sliding_attention"] * config.num_hidden_layers
    assert [s.kind for s in shape.layers] == [KIND[t] for t in expected]
    window = getattr(config, "sliding_window", 0)
    assert all(s.window == (window if s.kind == "sliding" else 0) for s in shape.layers)


def test_family_patterns_exact():
    kinds = lambda case: "".join(s.kind[0] for s in shape_from_config(CASES[case][0]().to_dict()).layers)
    assert kinds("gemma2") == "sfsfsf"        # sliding first, alternating
    assert kinds("gemma3_text") == "ssfssf"   # every 3rd layer full (pattern 3)
    assert kinds("qwen2") == "ffffss"         # slides from max_window_layers=4 on
    assert kinds("jamba") == "mfmmfm"         # attention at offset 1 every 3 layers
    assert kinds("llama") == "ffffff"
    assert kinds("llama4_text") == "cccfcc"   # every 4th layer global NoPE, the rest chunked


def test_bytes_per_token_and_mamba_layout():
    shape = shape_from_config(CASES["jamba"][0]().to_dict(), dtype="bfloat16")
    attn = shape.layers[1]
    assert (attn.num_kv_heads, attn.head_size, attn.bytes_per_token) == (2, 16, 2 * 2 * 16 * 2)
    mamba = shape.layers[0]
    # transformers keeps conv states of (d_inner, d_conv) and SSM states of (d_inner, d_state)
    assert mamba.conv_state == (128, 4) and mamba.ssm_state == (128, 8)
    assert mamba.state_bytes == 128 * 4 * 2 + 128 * 8 * 2
    fp32_ssm = shape_from_config(CASES["jamba"][0]().to_dict(), dtype="bfloat16", ssm_dtype="float32")
    assert fp32_ssm.layers[0].state_bytes == 128 * 4 * 2 + 128 * 8 * 4
    from_config = shape_from_config({**CASES["jamba"][0]().to_dict(), "mamba_ssm_cache_dtype": "float32"},
                                    dtype="bfloat16")
    assert from_config.layers[0] == fp32_ssm.layers[0]


def test_moe_active_parameters():
    shape = shape_from_config(CASES["gpt_oss"][0]().to_dict(), dtype="float32")
    expert = 2 * (64 * 96 + 96) + 96 * 64 + 64        # biased gate/up and down of one expert
    assert shape.weights_bytes // 4 - shape.active_params == 6 * (4 - 2) * expert


def test_mllama_cross_layers_and_image_tokens():
    shape = shape_from_config(mllama_config().to_dict())
    assert [s.kind for s in shape.layers] == ["full", "cross", "full", "full", "cross", "full"]
    assert shape.layers[1] == LayerSpec("cross", "bfloat16", 2, 16)
    assert shape.image_tokens_per_image == 4 * ((56 // 14) ** 2 + 1)


def test_llava_vision_pseudo_layer_and_image_tokens():
    shape = shape_from_config(CASES["llava"][0]().to_dict())
    assert len(shape.layers) == 7 and shape.layers[6] == LayerSpec("vision", "bfloat16", hidden_size=64)
    assert shape.image_tokens_per_image == 16                      # CLS dropped by the default strategy
    full = CASES["llava"][0]().to_dict() | {"vision_feature_select_strategy": "full"}
    assert shape_from_config(full).image_tokens_per_image == 17
    assert shape_from_config(CASES["llava_onevision"][0]().to_dict()).image_tokens_per_image == 16  # SigLIP: no CLS
    no_geometry = {"model_type": "llava", "text_config": dict(TEXT, model_type="llama"),
                   "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 48,
                                     "num_hidden_layers": 1, "patch_size": 14, "image_size": 0}}
    assert shape_from_config(no_geometry | {"image_seq_length": 100}).image_tokens_per_image == 100


def test_gemma3_bidirectional_window_matches_transformers():
    config = T.Gemma3TextConfig(**TEXT, head_dim=16, sliding_window=32, use_bidirectional_attention=True)
    d = config.to_dict() | {"sliding_window": 32}
    assert shape_from_config(d).layers[0].window == config.sliding_window == 17


def test_dtype_and_metadata():
    d = CASES["llama"][0]().to_dict() | {"torch_dtype": "float16"}
    shape = shape_from_config(d, name="tiny")
    n = n_params(CASES["llama"][0](), T.LlamaForCausalLM)
    assert (shape.name, shape.weights_bytes, shape.active_params) == ("tiny", 2 * n, n)
    assert (shape.hidden_size, shape.max_context) == (64, 256)
    assert shape.layers[0].dtype == "float16"
    assert shape_from_config(d, dtype="float32").weights_bytes == 4 * n
    assert shape_from_config({k: v for k, v in d.items() if k not in ("torch_dtype", "dtype")}).layers[0].dtype \
        == "bfloat16"


def test_bad_configs_raise_naming_the_problem():
    with pytest.raises(ValueError, match="'falcon'"):
        shape_from_config({"model_type": "falcon"})
    with pytest.raises(ValueError, match="torch_dtype"):
        shape_from_config(CASES["llama"][0]().to_dict() | {"torch_dtype": "complex64"})
    with pytest.raises(ValueError, match="layer_types has 2 entries"):
        shape_from_config(CASES["gemma2"][0]().to_dict() | {"layer_types": ["full_attention"] * 2})
    with pytest.raises(ValueError, match="'hidden_size'"):
        shape_from_config({k: v for k, v in CASES["llama"][0]().to_dict().items() if k != "hidden_size"})
    with pytest.raises(ValueError, match="'text_config'"):
        shape_from_config({"model_type": "mllama"})


def test_shape_from_path_reads_folder_or_file(tmp_path):
    d = CASES["gemma2"][0]().to_dict()
    (tmp_path / "config.json").write_text(json.dumps(d))
    shape = shape_from_path(tmp_path)
    assert shape.source == str(tmp_path / "config.json") and shape.name == tmp_path.name
    assert shape.layers == shape_from_config(d).layers
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    assert shape_from_path(other).layers == shape.layers
    with pytest.raises(ValueError, match="no config.json"):
        shape_from_path(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid json"):
        shape_from_path(tmp_path / "bad.json")
