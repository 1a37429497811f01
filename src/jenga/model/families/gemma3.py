"""Gemma-3 (text): Gemma-2 plus (1 + w) RMSNorm on q and k, a RoPE per layer
type (local base 10k on sliding layers, global base with optional linear
scaling on full layers), no attention soft-capping (HF's Gemma-3 never
passes `attn_logit_softcapping` to attention, so neither do we).  Built from
a `gemma3_text` config, or from a multimodal `gemma3` config whose text
tower it runs (vision weights are skipped).
"""

from __future__ import annotations

from .base import Arch, DecoderLM
from .gemma2 import gemma_arch

# Multimodal checkpoints keep the text tower under one of these prefixes.
_TEXT_PREFIXES = ("model.language_model.", "language_model.model.")
_VISION_PREFIXES = ("model.vision_tower.", "vision_tower.", "model.multi_modal_projector.",
                    "multi_modal_projector.")


class Gemma3ForCausalLM(DecoderLM):
    model_types = ("gemma3_text", "gemma3")

    def __init__(self, config, *args, **kwargs) -> None:
        from .base import hf_config
        config = hf_config(config)
        if getattr(config, "model_type", "") == "gemma3":
            config = config.text_config
        super().__init__(config, *args, **kwargs)

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        return gemma_arch(cfg, qk_norm=True)

    def map_name(self, name: str) -> str | None:
        if name.startswith(_VISION_PREFIXES):
            return None
        for prefix in _TEXT_PREFIXES:
            if name.startswith(prefix):
                name = "model." + name[len(prefix):]
        if name.startswith("language_model.lm_head."):
            name = name[len("language_model."):]
        return super().map_name(name)
