"""gpt-oss: alternating sliding (128) / full layers, a learned attention
sink logit per head in every softmax denominator, biased q/k/v/o, YaRN RoPE,
and a top-k routed MoE of clamped-SwiGLU experts in place of the MLP.
Checkpoints must hold dequantised (bf16/fp32) expert weights, as
`save_pretrained` writes them; MXFP4 `*_blocks` / `*_scales` tensors are
rejected by `load_weights` as unexpected.
"""

from __future__ import annotations

import torch.nn as nn

from ..layers import MoE
from .base import Arch, DecoderLM, common_arch


class GptOssForCausalLM(DecoderLM):
    model_types = ("gpt_oss",)

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        bias = bool(cfg.attention_bias)
        return common_arch(cfg, qkv_bias=bias, o_bias=bias, sinks=True, num_experts=cfg.num_local_experts,
                           top_k=cfg.num_experts_per_tok, swiglu_alpha=cfg.swiglu_alpha,
                           swiglu_limit=cfg.swiglu_limit)

    def make_mlp(self, a: Arch) -> nn.Module:
        return MoE(a.hidden_size, a.intermediate_size, a.num_experts, a.top_k, a.swiglu_alpha, a.swiglu_limit,
                   self.shard)
