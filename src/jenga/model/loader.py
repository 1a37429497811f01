"""Load a Hugging Face model folder into a Jenga model.

A folder holds `config.json` and either `model.safetensors` or shards
`model-0000x-of-0000y.safetensors` listed in `model.safetensors.index.json`.
Tensors stream one at a time from the safetensors files into the model
(which was built on the meta device), cast to fp32 on CPU or bf16 on CUDA
unless a dtype is given; tied embeddings are shared, not copied.  A
tensor-parallel rank (model/parallel.py) reads only its range of each
sharded tensor, and skips what it does not hold.  Nothing is downloaded: the
folder must exist locally.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from .families import DecoderLM, model_class
from .parallel import NO_TP, TPShard, read_slice

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_config(path: str | Path) -> dict:
    """The folder's config.json as a dict; ValueError if absent."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise ValueError(f"no config.json in {path}")
    return json.loads(cfg.read_text())


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a folder, in shard order; ValueError if none."""
    path = Path(path)
    if (path / SINGLE).is_file():
        return [path / SINGLE]
    if (path / INDEX).is_file():
        weight_map = json.loads((path / INDEX).read_text())["weight_map"]
        files = [path / f for f in sorted(set(weight_map.values()))]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise ValueError(f"index lists missing shards: {absent}")
        return files
    raise ValueError(f"no {SINGLE} or {INDEX} in {path}")


def iter_weights(path: str | Path, model: DecoderLM | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of every weight file, lazily.  With
    a `model`, only the tensors it keeps, and of each only the range its
    tensor-parallel rank holds (`model.weight_slice`)."""
    from safetensors import safe_open
    for f in weight_files(path):
        with safe_open(str(f), framework="pt") as sf:
            for name in sf.keys():
                if model is None:
                    yield name, sf.get_tensor(name)
                elif model.map_name(name) is not None:
                    yield name, read_slice(sf, name, model.weight_slice(name))


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are ~80x slower on AVX2-only CPUs), bf16 on GPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(path: str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None, shard: TPShard = NO_TP) -> DecoderLM:
    """Build the family named by config.json's model_type and load its
    weights (with a shard of size > 1, this rank's share of them).  Raises
    ValueError on a missing file, an unsupported model_type, a family that
    cannot be sharded, or weights that do not match the model."""
    device = torch.device(device)
    cfg = read_config(path)
    cls = model_class(cfg.get("model_type", ""))
    if shard.size == 1:
        model = cls(cfg, dtype=dtype or default_dtype(device), device=device)
        model.load_weights(iter_weights(path))
        return model.eval()
    if not cls.tensor_parallel:
        raise ValueError(f"tensor_parallel_size={shard.size}: {cls.__name__} ({cfg.get('model_type')}) "
                         "is not sharded yet; see docs/parallel.md for the families that are")
    model = cls(cfg, dtype=dtype or default_dtype(device), device=device, shard=shard)
    model.load_weights(iter_weights(path, model))
    return model.eval()
