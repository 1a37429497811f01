"""Model families: HF `model_type` -> model class.

Every class is a `base.DecoderLM` built from an HF config (object or
config.json dict) and checked token for token against transformers in
tests/model/test_families.py.
"""

from __future__ import annotations

from .bamba import BambaForCausalLM
from .base import DecoderLM
from .gemma2 import Gemma2ForCausalLM
from .gemma3 import Gemma3ForCausalLM
from .gpt_oss import GptOssForCausalLM
from .jamba import JambaForCausalLM
from .llama4 import Llama4ForCausalLM
from .llama import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM
from .llava import LlavaForConditionalGeneration
from .mllama import MllamaForConditionalGeneration

REGISTRY: dict[str, type[DecoderLM]] = {
    t: cls
    for cls in (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM,
                Gemma2ForCausalLM, Gemma3ForCausalLM, GptOssForCausalLM, JambaForCausalLM, BambaForCausalLM,
                Llama4ForCausalLM)
    for t in cls.model_types
}
# vision-language families (docs/vlm.md)
REGISTRY.update({t: cls for cls in (MllamaForConditionalGeneration, LlavaForConditionalGeneration)
                 for t in cls.model_types})


def model_class(model_type: str) -> type[DecoderLM]:
    """The class serving `model_type`; ValueError naming the known types."""
    try:
        return REGISTRY[model_type]
    except KeyError:
        raise ValueError(f"unsupported model_type {model_type!r}; known: {', '.join(sorted(REGISTRY))}") from None
