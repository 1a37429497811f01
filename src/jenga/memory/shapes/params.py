"""Parameter counts from config fields, for a shape's weights and compute.

The simulator needs two numbers per model: how many bytes of weights sit in
GPU memory (all parameters) and how many parameters one token touches (a
mixture-of-experts layer runs only `top_k` of its experts).  These helpers
count the parameters of the building blocks Hugging Face models are made of
(linear layers, gated MLPs, expert banks, Mamba mixers, ViT towers) from
plain numbers; `hf.py` wires them per family.  Counts are exact for the
module layouts of transformers 5 (the tests compare against instantiated
models).  Pure arithmetic: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamCount:
    """total: every parameter; active: the parameters one token uses."""

    total: int
    active: int

    def __add__(self, other: "ParamCount") -> "ParamCount":
        return ParamCount(self.total + other.total, self.active + other.active)

    @staticmethod
    def dense(n: int) -> "ParamCount":
        """A block every token runs through."""
        return ParamCount(n, n)


def linear(n_in: int, n_out: int, bias: bool = False) -> int:
    return n_in * n_out + (n_out if bias else 0)


def attention(hidden: int, heads: int, kv_heads: int, head_dim: int, *, qkv_bias: bool = False,
              o_bias: bool = False, qk_norm: bool = False, sinks: bool = False) -> int:
    """q/k/v/o projections, optional per-head-dim RMSNorm on q and k, and
    optional learned attention sinks (one logit per head)."""
    q, kv = heads * head_dim, kv_heads * head_dim
    n = linear(hidden, q, qkv_bias) + 2 * linear(hidden, kv, qkv_bias) + linear(q, hidden, o_bias)
    return n + (2 * head_dim if qk_norm else 0) + (heads if sinks else 0)


def gated_mlp(hidden: int, inter: int, bias: bool = False) -> int:
    """gate, up and down projections (SwiGLU / GeGLU)."""
    return 2 * linear(hidden, inter, bias) + linear(inter, hidden, bias)


def moe(hidden: int, inter: int, experts: int, top_k: int, *, router_bias: bool = False,
        expert_bias: bool = False) -> ParamCount:
    """A router plus `experts` gated MLPs; a token runs the router and
    `top_k` experts.  Raises ValueError when top_k is not in [1, experts]."""
    if not 1 <= top_k <= experts:
        raise ValueError(f"num_experts_per_tok={top_k} must be in [1, num_experts={experts}]")
    one = gated_mlp(hidden, inter, expert_bias)
    router = linear(hidden, experts, router_bias)
    return ParamCount(router + experts * one, router + top_k * one)


def mamba_mixer(hidden: int, d_inner: int, d_state: int, d_conv: int, dt_rank: int, *,
                conv_bias: bool = True, proj_bias: bool = False, inner_norms: bool = True) -> int:
    """A Mamba-1 mixer as Jamba builds it: in_proj (x and gate), depthwise
    conv1d, x_proj (dt, B, C), dt_proj, A_log, D, out_proj, and Jamba's RMS
    norms on dt, B and C."""
    n = linear(hidden, 2 * d_inner, proj_bias)
    n += d_inner * d_conv + (d_inner if conv_bias else 0)
    n += linear(d_inner, dt_rank + 2 * d_state) + linear(dt_rank, d_inner, True)
    n += d_inner * d_state + d_inner + linear(d_inner, hidden, proj_bias)
    return n + ((dt_rank + 2 * d_state) if inner_norms else 0)


def embeddings(vocab: int, hidden: int, tied: bool, extra_rows: int = 0) -> int:
    """Input embedding (`vocab + extra_rows` rows) plus an untied lm_head."""
    return (vocab + extra_rows) * hidden + (0 if tied else vocab * hidden)


def vit(cfg: dict) -> int:
    """A CLIP / SigLIP / mllama vision tower from its vision_config dict.

    CLIP: class token, conv patch embedding without bias, pre- and post-
    LayerNorm.  SigLIP: no class token, biased patch conv, post-LayerNorm,
    and an attention-pooling head unless `vision_use_head` is false.
    mllama: tiled position embeddings, unbiased attention, and gated global
    layers.  llama4: unbiased unfold patch embedding, class token, and a
    pixel-shuffle adapter MLP (fc1 intermediate -> projector_input_dim, fc2
    projector_output_dim square).  Raises ValueError for another model_type.
    """
    kind = cfg.get("model_type", "clip_vision_model")
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    ch, patch, size = cfg.get("num_channels", 3), cfg["patch_size"], cfg["image_size"]
    patches = (size // patch) ** 2
    mlp = linear(h, inter, True) + linear(inter, h, True)
    if kind == "mllama_vision_model":
        return _mllama_vit(cfg, h, mlp, ch * patch * patch * h, patches)
    if kind == "llama4_vision_model":
        layers = cfg["num_hidden_layers"] * (4 * linear(h, h, True) + mlp + 4 * h)
        out = cfg.get("projector_output_dim", 4096)
        adapter = linear(inter, cfg.get("projector_input_dim", 4096)) + linear(out, out)
        return ch * patch * patch * h + h + (patches + 1) * h + 4 * h + layers + adapter
    layer = 4 * linear(h, h, True) + mlp + 4 * h
    layers = cfg["num_hidden_layers"] * layer
    if kind == "clip_vision_model":
        return ch * patch * patch * h + h + (patches + 1) * h + 2 * h + layers + 2 * h
    if kind == "siglip_vision_model":
        head = h + 4 * linear(h, h, True) + 2 * h + mlp if cfg.get("vision_use_head", True) else 0
        return ch * patch * patch * h + h + patches * h + layers + 2 * h + head
    raise ValueError(f"vision_config.model_type {kind!r} is not supported; known: clip_vision_model, "
                     "siglip_vision_model, mllama_vision_model, llama4_vision_model")


def _mllama_vit(cfg: dict, h: int, mlp: int, patch_conv: int, patches: int) -> int:
    tiles, ratios = cfg["max_num_tiles"], cfg.get("max_aspect_ratio_id", 8) + 1
    layer = 4 * linear(h, h) + mlp + 4 * h
    n = patch_conv + h + (patches + 1) * h + 1 + ratios * tiles * (patches + 1) * h
    n += 2 * (ratios * tiles * h + 1)       # pre- and post-tile embeddings with their gates
    n += 2 * 2 * h                           # layernorm_pre / layernorm_post
    n += cfg["num_hidden_layers"] * layer + cfg.get("num_global_layers", 8) * (layer + 2)
    return n
