"""Gemma-2: alternating sliding / full layers, with what sets Gemma apart:
(1 + w) RMSNorms, a norm after attention and around the MLP ("sandwich"),
embeddings scaled by sqrt(hidden), scores scaled by
query_pre_attn_scalar^-0.5 and soft-capped (cap * tanh(s / cap)), and
soft-capped final logits.
"""

from __future__ import annotations

from .base import Arch, DecoderLM, common_arch


def gemma_arch(cfg, **kw) -> Arch:
    """The Arch fields Gemma-2 and Gemma-3 share."""
    if getattr(cfg, "use_bidirectional_attention", False):
        raise ValueError("use_bidirectional_attention=True (embedding models) is not supported")
    bias = bool(getattr(cfg, "attention_bias", False))
    return common_arch(
        cfg, act=cfg.hidden_activation, qkv_bias=bias, o_bias=bias, norm_offset=1.0, sandwich=True,
        embed_scale=cfg.hidden_size ** 0.5, scale=cfg.query_pre_attn_scalar ** -0.5,
        final_softcap=cfg.final_logit_softcapping or 0.0, **kw)


class Gemma2ForCausalLM(DecoderLM):
    model_types = ("gemma2",)

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        return gemma_arch(cfg, attn_softcap=cfg.attn_logit_softcapping or 0.0)
