"""Built-in shapes of the paper's models, from embedded config dicts.

Each preset is the relevant part of the model's published `config.json`,
passed through `hf.shape_from_config`, so presets and config files share one
code path (and one parameter count).  Two presets model techniques rather
than checkpoints and transform a Llama-3.1-70B shape afterwards:

- character-ai-70b: Llama-70B where every 6th layer is global and the rest
  slide over 1024 tokens, with cross-layer KV sharing between adjacent pairs
  of layers.  A layer that reuses its neighbour's KV stores nothing, so only
  the 40 KV-owning layers are listed (a pair with a global layer owns a
  global KV); layer i of the shape is the pair (2i, 2i+1).
- pyramidkv-70b: Llama-70B whose per-layer token budget shrinks with depth,
  in 4 tiers of 20 layers keeping 2048 / 1024 / 512 / 256 tokens, as
  `budget` layers (policies/budget.py): a layer keeps its B most relevant
  tokens in ceil(B / page) pages, a new token taking an evicted one's slot.
  (It was a sliding window of B tokens until 2026-11-27: the same tokens,
  but about one page more per tier, the one straddling the window's start.)

Weights and active parameters of both stay those of the 80-layer model.
`source` names the HF repository and the config fields each shape uses.
"""

from __future__ import annotations

from dataclasses import replace

from ..spec import LayerSpec, ModelShape
from .hf import shape_from_config

_LLAMA31 = dict(model_type="llama", vocab_size=128256, max_position_embeddings=131072, torch_dtype="bfloat16")
_LLAMA_8B = dict(_LLAMA31, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8)
_LLAMA_70B = dict(_LLAMA31, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                  num_attention_heads=64, num_key_value_heads=8)
_ATTN_FIELDS = "hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, " \
               "vocab_size, max_position_embeddings"

_GEMMA2 = dict(model_type="gemma2", vocab_size=256000, max_position_embeddings=8192, sliding_window=4096,
               torch_dtype="bfloat16")
_GEMMA3_TEXT = dict(model_type="gemma3_text", vocab_size=262208, max_position_embeddings=131072,
                    sliding_window=1024, sliding_window_pattern=6)
_SIGLIP_896 = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                   num_hidden_layers=27, num_attention_heads=16, image_size=896, patch_size=14,
                   vision_use_head=False)

# Llama 4 (meta-llama/Llama-4-Scout-17B-16E and -Maverick-17B-128E
# config.json): a llama4 config wrapping the text model; 3 of every 4 layers
# use RoPE and attend within 8192-token chunks, every 4th is global (NoPE)
_LLAMA4_TEXT = dict(model_type="llama4_text", hidden_size=5120, intermediate_size=8192, intermediate_size_mlp=16384,
                    num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8, head_dim=128,
                    vocab_size=202048, attention_chunk_size=8192, no_rope_layer_interval=4, num_experts_per_tok=1)
_LLAMA4_VISION = dict(model_type="llama4_vision_model", hidden_size=1408, intermediate_size=5632, num_hidden_layers=34,
                      num_attention_heads=16, image_size=336, patch_size=14, vision_output_dim=4096,
                      projector_input_dim=4096, projector_output_dim=4096)
_LLAMA4_FIELDS = ("text_config.{hidden_size, intermediate_size, intermediate_size_mlp, num_hidden_layers, "
                  "num_attention_heads, num_key_value_heads, head_dim, vocab_size, attention_chunk_size=8192, "
                  "no_rope_layers (every 4th layer NoPE), num_local_experts, num_experts_per_tok=1, "
                  "interleave_moe_layer_step, max_position_embeddings}, vision_config (weights only), "
                  "torch_dtype=bfloat16")

CONFIGS: dict[str, tuple[dict, str]] = {
    "llama-3.2-11b-vision": (dict(
        model_type="mllama", torch_dtype="bfloat16",
        text_config=dict(_LLAMA_8B, num_hidden_layers=40, cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38]),
        vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_global_layers=8,
                           attention_heads=16, image_size=560, patch_size=14, max_num_tiles=4,
                           max_aspect_ratio_id=8, vision_output_dim=7680)),
        "meta-llama/Llama-3.2-11B-Vision-Instruct config.json: text_config.{" + _ATTN_FIELDS +
        ", cross_attention_layers}, vision_config.{image_size, patch_size, max_num_tiles} (6404 tokens/image)"),
    "gemma-2-9b": (dict(_GEMMA2, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=256),
                   "google/gemma-2-9b config.json: " + _ATTN_FIELDS + ", head_dim, sliding_window; "
                   "layers alternate sliding/full from layer 0 (transformers Gemma2Config)"),
    "gemma-2-27b": (dict(_GEMMA2, hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
                         num_attention_heads=32, num_key_value_heads=16, head_dim=128),
                    "google/gemma-2-27b config.json: " + _ATTN_FIELDS + ", head_dim, sliding_window; "
                    "layers alternate sliding/full from layer 0 (transformers Gemma2Config)"),
    "gemma-3-12b": (dict(model_type="gemma3", torch_dtype="bfloat16", vision_config=_SIGLIP_896,
                         text_config=dict(_GEMMA3_TEXT, hidden_size=3840, intermediate_size=15360,
                                          num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8,
                                          head_dim=256)),
                    "google/gemma-3-12b-it config.json: text_config.{" + _ATTN_FIELDS + ", head_dim, "
                    "sliding_window, sliding_window_pattern=6}; SigLIP vision_config counted in weights only"),
    "gemma-3-27b": (dict(model_type="gemma3", torch_dtype="bfloat16", vision_config=_SIGLIP_896,
                         text_config=dict(_GEMMA3_TEXT, hidden_size=5376, intermediate_size=21504,
                                          num_hidden_layers=62, num_attention_heads=32, num_key_value_heads=16,
                                          head_dim=128)),
                    "google/gemma-3-27b-it config.json: text_config.{" + _ATTN_FIELDS + ", head_dim, "
                    "sliding_window, sliding_window_pattern=6}; SigLIP vision_config counted in weights only"),
    "ministral-8b": (dict(model_type="ministral", torch_dtype="bfloat16", hidden_size=4096, intermediate_size=12288,
                          num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                          vocab_size=131072, max_position_embeddings=131072, sliding_window=32768,
                          layer_types=["full_attention" if i % 4 == 3 else "sliding_attention" for i in range(36)]),
                     "mistralai/Ministral-8B-Instruct-2410 config.json: " + _ATTN_FIELDS + ", head_dim, "
                     "sliding_window=32768; interleaved pattern (3 sliding then 1 full, as the Jenga paper "
                     "describes it) given as layer_types"),
    "jamba-1.5-mini": (dict(model_type="jamba", torch_dtype="bfloat16", hidden_size=4096, intermediate_size=14336,
                            num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=65536,
                            max_position_embeddings=262144, attn_layer_period=8, attn_layer_offset=4,
                            expert_layer_period=2, expert_layer_offset=1, num_experts=16, num_experts_per_tok=2,
                            mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=256,
                            mamba_ssm_cache_dtype="float32"),
                       "ai21labs/AI21-Jamba-1.5-Mini config.json: " + _ATTN_FIELDS + ", attn_layer_period/offset, "
                       "expert_layer_period/offset, num_experts(_per_tok), mamba_d_state/d_conv/expand/dt_rank; "
                       "SSM state kept in float32 (vLLM --mamba-ssm-cache-dtype float32)"),
    "llama-4-scout": (dict(model_type="llama4", torch_dtype="bfloat16", vision_config=_LLAMA4_VISION,
                           text_config=dict(_LLAMA4_TEXT, num_local_experts=16, interleave_moe_layer_step=1,
                                            max_position_embeddings=10485760)),
                      "meta-llama/Llama-4-Scout-17B-16E config.json: " + _LLAMA4_FIELDS + "; 16 routed experts "
                      "+ 1 shared in every layer; 10M-token context"),
    "llama-4-maverick": (dict(model_type="llama4", torch_dtype="bfloat16", vision_config=_LLAMA4_VISION,
                              text_config=dict(_LLAMA4_TEXT, num_local_experts=128, interleave_moe_layer_step=2,
                                               max_position_embeddings=1048576)),
                         "meta-llama/Llama-4-Maverick-17B-128E config.json: " + _LLAMA4_FIELDS + "; 128 routed "
                         "experts + 1 shared in every 2nd layer (dense MLPs between); 1M-token context"),
    "llama-3.1-8b": (_LLAMA_8B, "meta-llama/Llama-3.1-8B config.json: " + _ATTN_FIELDS),
    "llama-3.1-70b": (_LLAMA_70B, "meta-llama/Llama-3.1-70B config.json: " + _ATTN_FIELDS),
    "llava-onevision-7b": (dict(
        model_type="llava_onevision", torch_dtype="bfloat16", vision_feature_select_strategy="full",
        text_config=dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, vocab_size=152128,
                         max_position_embeddings=32768),
        vision_config=dict(_SIGLIP_896, num_hidden_layers=26, image_size=384)),
        "llava-hf/llava-onevision-qwen2-7b-ov-hf config.json: text_config.{" + _ATTN_FIELDS + "} (Qwen2-7B), "
        "vision_config.{image_size=384, patch_size=14}: 729 tokens per image, assuming ONE 384x384 crop per "
        "image (AnyRes crops not modelled); one vision pseudo-layer of the text hidden size"),
    "character-ai-70b": (dict(_LLAMA_70B, sliding_window=1024,
                              layer_types=["full_attention" if i % 6 == 5 else "sliding_attention"
                                           for i in range(80)]),
                         "Llama-3.1-70B shape (meta-llama/Llama-3.1-70B config.json) with character.ai's "
                         "inference design (character.ai blog, 'Optimizing AI Inference at Character.AI', 2024): "
                         "every 6th layer global, others sliding window 1024, adjacent layer pairs share one KV; "
                         "only the 40 KV-owning layers are listed"),
    "pyramidkv-70b": (_LLAMA_70B,
                      "Llama-3.1-70B shape (meta-llama/Llama-3.1-70B config.json) with PyramidKV per-layer "
                      "budgets (Cai et al., 2024) shrinking with depth: 4 tiers of 20 layers keep 2048/1024/512/256 "
                      "tokens (a `budget` layer: the kept tokens fill ceil(B / page) pages, an evicted token's "
                      "slot taking the next one)"),
}

PYRAMID_TIERS = (2048, 1024, 512, 256)


def _share_pairs(shape: ModelShape) -> ModelShape:
    """Keep one KV-owning layer per adjacent pair; a pair holding a full
    layer owns a full KV."""
    owners = []
    for i in range(0, len(shape.layers), 2):
        pair = shape.layers[i:i + 2]
        owners.append(next((s for s in pair if s.kind == "full"), pair[0]))
    return replace(shape, layers=tuple(owners))


def _pyramid(shape: ModelShape) -> ModelShape:
    tier_len = len(shape.layers) // len(PYRAMID_TIERS)
    layers = tuple(LayerSpec("budget", s.dtype, s.num_kv_heads, s.head_size,
                             budget=PYRAMID_TIERS[min(i // tier_len, len(PYRAMID_TIERS) - 1)])
                   for i, s in enumerate(shape.layers))
    return replace(shape, layers=layers)


_TRANSFORMS = {"character-ai-70b": _share_pairs, "pyramidkv-70b": _pyramid}


def _build(name: str) -> ModelShape:
    cfg, source = CONFIGS[name]
    shape = shape_from_config(cfg, name=name, source=source)
    return _TRANSFORMS.get(name, lambda s: s)(shape)


PRESETS: dict[str, ModelShape] = {name: _build(name) for name in CONFIGS}


def get_preset(name: str) -> ModelShape:
    """The preset called `name`; ValueError listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
