"""Gemma-3 (text): Gemma-2 plus (1 + w) RMSNorm on q and k, a RoPE per layer
type (local base 10k on sliding layers, global base with optional linear
scaling on full layers), no attention soft-capping (HF's Gemma-3 never
passes `attn_logit_softcapping` to attention, so neither do we).  Built from
a `gemma3_text` config, or from a multimodal `gemma3` config whose text
tower it runs (vision weights are skipped).
"""

from __future__ import annotations

from .base import Arch, DecoderLM, text_tower_name
from .gemma2 import gemma_arch

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
        name = text_tower_name(name, _VISION_PREFIXES)
        return None if name is None else super().map_name(name)
