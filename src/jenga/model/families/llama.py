"""Llama-style families: Llama (and SmolLM2), Mistral / Ministral, Qwen2, Qwen3.

They share everything but biases, the sliding-window rule and Qwen3's
per-head q/k RMSNorm:
- llama: `attention_bias` on q/k/v/o, `mlp_bias` on the MLP; RoPE may carry
  llama3 / linear / yarn scaling;
- mistral: no biases; `sliding_window` applies to every layer (Ministral
  configs name the sliding layers in `layer_types` instead);
- qwen2: bias on q/k/v only; sliding layers from `layer_types`;
- qwen3: `attention_bias` on q/k/v/o and RMSNorm on q and k before RoPE.
"""

from __future__ import annotations

from .base import Arch, DecoderLM, common_arch


class LlamaForCausalLM(DecoderLM):
    model_types = ("llama",)

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        bias = bool(getattr(cfg, "attention_bias", False))
        return common_arch(cfg, qkv_bias=bias, o_bias=bias, mlp_bias=bool(getattr(cfg, "mlp_bias", False)))


class MistralForCausalLM(DecoderLM):
    model_types = ("mistral", "ministral")

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        if getattr(cfg, "layer_types", None):
            return common_arch(cfg)
        n = cfg.num_hidden_layers
        return common_arch(cfg, windows=(cfg.sliding_window or 0,) * n, chunks=(0,) * n)


class Qwen2ForCausalLM(DecoderLM):
    model_types = ("qwen2",)

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        return common_arch(cfg, qkv_bias=True)


class Qwen3ForCausalLM(DecoderLM):
    model_types = ("qwen3",)

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        bias = bool(getattr(cfg, "attention_bias", False))
        return common_arch(cfg, qkv_bias=bias, o_bias=bias, qk_norm=True)
