"""Where a model comes from: a local folder, or a Hugging Face repo id that
is already in the local Hugging Face cache.  Never a download.

`resolve_model` turns what the user typed (`LLM("ORG/NAME")`,
`jenga serve ORG/NAME`) into a folder, honouring HF_HOME and HF_HUB_CACHE
as huggingface_hub does, and says in one line what is wrong otherwise:
a placeholder copied from a doc, a file instead of a folder, a repo id that
is not cached (with the command that fetches it).  `check_supported`
refuses checkpoints Jenga cannot run correctly (quantized weights).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_PLACEHOLDER = re.compile(r"(^|/)path/to(/|$)|[<>{}]|^(ORG|USER|OWNER)/(NAME|MODEL)$|^(MODEL|DIR|FOLDER)$")


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub uses: $HF_HUB_CACHE, else $HF_HOME/hub,
    else ~/.cache/huggingface/hub (read now, so a changed environment counts)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def resolve_model(name: str | Path, what: str = "model") -> Path:
    """The folder `name` names: itself when it is a directory, else the
    cached snapshot of the Hugging Face repo id `name`.  Raises ValueError
    (starting with `what`) when it is neither."""
    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{what}: {text} is a file; give the model's folder (the one holding config.json)")
    if _PLACEHOLDER.search(text):
        raise ValueError(f"{what}: {text!r} looks like a placeholder; give a model folder or a Hugging Face "
                         "repo id from the local cache")
    if not _REPO_ID.match(text) or ".." in text:
        raise ValueError(f"{what}: no folder {text}")
    cached = _cached_snapshot(text)
    if cached is None:
        raise ValueError(f"{what}: {text!r} is not a folder, and not in the local Hugging Face cache "
                         f"({hf_cache_dir()}); Jenga never downloads: fetch it with "
                         f"`huggingface-cli download {text}` (or give a folder)")
    return cached


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=str(hf_cache_dir())))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None


def check_supported(folder: Path, hf_config: dict) -> None:
    """ValueError for a checkpoint Jenga would run wrongly: quantized
    weights (a quantization_config) are not supported."""
    for cfg in (hf_config, hf_config.get("text_config") or {}):
        q = cfg.get("quantization_config")
        if q:
            method = q.get("quant_method", "unknown") if isinstance(q, dict) else q
            raise ValueError(f"model: {folder} holds quantized weights (quantization_config, method {method!r}), "
                             "which Jenga does not support; use an unquantized checkpoint")
