"""Built-in demo models: small random-weight checkpoints with heterogeneous
layers, built once on this machine from transformers config classes.

The only real weights here are SmolLM2-135M, whose layers are all full
attention, so it cannot show what Jenga is for.  These models have the
*shapes* that matter (Gemma-2's alternating sliding/full layers with
soft-capping; Ministral's three sliding layers out of four) at a size a
2-core CPU runs in seconds.  Their weights are random (fixed seed), so their
text is noise, but memory and throughput behave as in the real families.
The SmolLM2 tokenizer files (from `gguf_convert`) are copied in, so text
prompts work.  A model is written once to `<jenga cache>/builtin-<name>`
(the cache root of `gguf_convert`), stamped, and reused afterwards; it is
written beside its final place and renamed in, so an interrupted build
leaves nothing half-written.  `--model builtin:NAME` anywhere on the
command line resolves through `resolve_model`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

PREFIX = "builtin:"
STAMP = "jenga_builtin.json"
BUILDER_VERSION = 1
# SmolLM2's special token ids (the tokenizer copied into every built-in)
_BOS, _EOS = 1, 2
_VOCAB = 49152
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

# Shapes shared by both models: 256 hidden, 4 query heads over 2 KV heads of
# 64, a 128-token window and a 4K context, so prompts of 1-2K tokens leave
# most of each prompt outside the window.
_COMMON = dict(vocab_size=_VOCAB, hidden_size=256, intermediate_size=1024, num_attention_heads=4,
               num_key_value_heads=2, head_dim=64, max_position_embeddings=4096, sliding_window=128,
               bos_token_id=_BOS, eos_token_id=_EOS, pad_token_id=_EOS, tie_word_embeddings=True)

BUILTINS: dict[str, tuple[str, dict[str, Any], str]] = {
    "gemma2-small": ("gemma2", dict(_COMMON, num_hidden_layers=6, query_pre_attn_scalar=64,
                                    attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
                     "Gemma-2 shape: 6 layers alternating sliding(128)/full, attention and final soft-capping"),
    "ministral-small": ("ministral", dict(_COMMON, num_hidden_layers=8,
                                          layer_types=["full_attention" if i % 4 == 3 else "sliding_attention"
                                                       for i in range(8)]),
                        "Ministral shape: 8 layers, 3 of every 4 sliding(128), the 4th full"),
}


def builtin_names() -> tuple[str, ...]:
    return tuple(BUILTINS)


def builtin_config(name: str, **overrides: Any):
    """The transformers config object of built-in `name`, with `overrides`
    applied (tests shrink the models this way).  Raises ValueError naming
    the known models for an unknown name."""
    if name not in BUILTINS:
        raise ValueError(f"model: unknown built-in {name!r}; known: {', '.join(BUILTINS)}")
    from transformers import AutoConfig
    model_type, fields, _ = BUILTINS[name]
    return AutoConfig.for_model(model_type, **{**fields, **overrides})


def describe(name: str) -> str:
    """One line on what built-in `name` is shaped like."""
    if name not in BUILTINS:
        raise ValueError(f"model: unknown built-in {name!r}; known: {', '.join(BUILTINS)}")
    return BUILTINS[name][2]


def build_model_folder(config, out: Path, seed: int = 0, tokenizer_dir: Path | None = None,
                       dtype: str = "float32", device: str = "cpu") -> Path:
    """Write a random-weight checkpoint of `config` (safetensors in `dtype`,
    weights drawn on `device` after `torch.manual_seed(seed)`: a GPU draws a
    billion-parameter model in a second) plus the tokenizer files of
    `tokenizer_dir` (default: the converted SmolLM2) into `out`, which must
    not exist yet.  Returns `out`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    src = Path(tokenizer_dir) if tokenizer_dir is not None else _smollm2_dir()
    out = Path(out)
    out.mkdir(parents=True)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    del model
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id).save_pretrained(out)
    for f in _TOKENIZER_FILES:
        shutil.copyfile(src / f, out / f)
    return out


def builtin_model_path(name: str, seed: int = 0) -> Path:
    """The folder of built-in `name`, building it first if it is absent or
    was built from another recipe.  Raises ValueError for an unknown name
    and FileNotFoundError when the SmolLM2 tokenizer cannot be made."""
    from ..model.gguf_convert import cache_root

    config = builtin_config(name)
    out = cache_root() / f"builtin-{name}"
    stamp = {"name": name, "seed": seed, "builder_version": BUILDER_VERSION, "config": BUILTINS[name][1]}
    from ..model.gguf_convert import cached_folder

    return cached_folder(out, STAMP, stamp, lambda folder: build_model_folder(config, folder, seed))


def resolve_model(model: str | Path | None) -> Path | None:
    """`builtin:NAME` -> that built-in's folder (built if needed); a path ->
    itself; None -> None (the engine's default model)."""
    if model is None:
        return None
    text = str(model)
    if text.startswith(PREFIX):
        return builtin_model_path(text[len(PREFIX):])
    return Path(text)


def _smollm2_dir() -> Path:
    from ..model.gguf_convert import default_model_path
    return default_model_path()


