"""vLLM's engine arguments onto EngineConfig, and the model folder's
generation defaults.

`engine_config(model, **kwargs)` accepts every EngineConfig field by its
Jenga name and, where vLLM names it differently, by vLLM's (the field's
`vllm` metadata: `kv_cache_memory_bytes` for kv_cache_memory, `block_size`
for page_tokens), plus vLLM's `speculative_config` dict.  An unknown
argument is a ValueError naming it, with the closest known name.
`generation_defaults` reads generation_config.json as vLLM's
`--generation-config` does.  Pure Python: no torch import.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..cliutil import add_dataclass_args
from .config import EngineConfig

# generation_config.json keys vLLM takes as default sampling parameters -> SamplingParams names
GENERATION_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                   "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}
_SPEC_KEYS = {"model", "num_speculative_tokens", "method"}


def vllm_aliases() -> dict[str, str]:
    """vLLM argument name -> EngineConfig field, where they differ."""
    return {f.metadata["vllm"]: f.name for f in fields(EngineConfig) if "vllm" in f.metadata}


def engine_config(model: str | Path | None = None, **kwargs: Any) -> EngineConfig:
    """The EngineConfig these vLLM- or Jenga-named arguments describe.
    Raises ValueError naming an unknown or twice-given argument, or (from
    EngineConfig) the field with a bad value."""
    known = {f.name for f in fields(EngineConfig)}
    aliases = vllm_aliases()
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in kwargs.items():
        if key == "speculative_config":
            items = speculative_fields(value).items()
        else:
            name = aliases.get(key, key)
            if name not in known or name == "model":
                raise ValueError(_unknown(key, known | set(aliases) | {"speculative_config"}))
            items = ((name, value),)
        for name, v in items:
            if name in given:
                raise ValueError(f"{key}: sets {name}, which {given[name]} already set")
            given[name], out[name] = key, v
    return EngineConfig(model=model, **out)


def add_engine_args(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ("model",)) -> None:
    """Every EngineConfig flag (vLLM's names first, Jenga's as aliases,
    help from the field docs) plus vLLM's --speculative-config JSON."""
    add_dataclass_args(parser, EngineConfig, skip=skip)
    parser.add_argument("--speculative-config", dest="speculative_config", default=None, metavar="JSON",
                        help='draft-model speculative decoding in vLLM\'s form, e.g. '
                             '\'{"model": "DIR", "num_speculative_tokens": 3}\' (sets --speculative-model and '
                             '--num-speculative-tokens)')


def engine_config_from_args(args: argparse.Namespace, **overrides: Any) -> EngineConfig:
    """The EngineConfig of parsed `add_engine_args` flags (unset flags keep
    the field defaults; `overrides` win).  ValueError naming the field."""
    names = {f.name for f in fields(EngineConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names and v is not None}
    spec = getattr(args, "speculative_config", None)
    if spec is not None:
        for name, v in speculative_fields(spec).items():
            if name in kw:
                raise ValueError(f"--speculative-config sets {name}, which its own flag already set")
            kw[name] = v
    kw.update(overrides)
    return EngineConfig(**kw)


def _unknown(key: str, names: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(names), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown engine argument {key!r}{hint}"


def speculative_fields(value: Mapping | str | None) -> dict[str, Any]:
    """vLLM's speculative_config ({"model": DIR, "num_speculative_tokens":
    k}, or its JSON text) as EngineConfig fields.  Only a separate draft
    model is supported (method absent or "draft_model")."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"speculative_config: not valid JSON ({e.msg}): {value!r}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"speculative_config must be a dict, got {type(value).__name__}")
    extra = sorted(set(value) - _SPEC_KEYS)
    if extra:
        raise ValueError(f"speculative_config: unsupported keys {extra}; Jenga takes model and num_speculative_tokens")
    if value.get("method", "draft_model") != "draft_model":
        raise ValueError(f"speculative_config: method {value['method']!r} is not supported; only a draft model")
    if "model" not in value or "num_speculative_tokens" not in value:
        raise ValueError("speculative_config needs both 'model' (the draft's folder) and 'num_speculative_tokens'")
    return {"speculative_model": value["model"], "num_speculative_tokens": value["num_speculative_tokens"]}


def generation_defaults(setting: str, model_path: Path) -> dict[str, Any]:
    """Default SamplingParams fields from a generation_config.json: "auto"
    reads the model folder's, "vllm" none, any other value is a folder
    holding one.  Only vLLM's keys count (temperature, top_p, top_k,
    min_p, repetition_penalty, max_new_tokens as max_tokens).  Raises
    ValueError for a folder without the file or a file that is not JSON."""
    if setting == "vllm":
        return {}
    folder = model_path if setting == "auto" else Path(setting).expanduser()
    path = folder / "generation_config.json"
    if not path.is_file():
        if setting == "auto":
            return {}
        raise ValueError(f"generation_config: no generation_config.json in {setting}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"generation_config: {path} is not valid JSON ({e.msg})") from None
    return {ours: cfg[key] for key, ours in GENERATION_KEYS.items() if cfg.get(key) is not None}
