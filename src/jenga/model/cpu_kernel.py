"""The compiled CPU paged-attention kernel: built on first use, or absent.

`cpu_paged_attention.cpp` (beside this file) is compiled once per machine
with `torch.utils.cpp_extension.load` into torch's extension cache
(`TORCH_EXTENSIONS_DIR`, default ~/.cache/torch_extensions) and registers
`torch.ops.jenga_cpu.paged_attention`.  The flags follow the CPU torch
itself was built to dispatch to (AVX2 + FMA where torch reports AVX2 or
better, plain -O3 otherwise), and the build name carries them, so a cache
shared between machines never runs instructions a CPU lacks.

When the build cannot happen (no compiler, no ninja, headers missing,
`JENGA_CPU_KERNEL=0`), `load()` returns None once and remembers why
(`unavailable_reason()`); attention then uses the portable path.  Nothing
here raises on a failed build.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_paged_attention.cpp")
_state: dict[str, object] = {}
# torch's build lock is a plain file: a process killed mid-build leaves it,
# and every later load would wait on it forever.  A build takes ~20 s (a
# minute on a loaded box), so a lock this old belongs to no live build.
STALE_LOCK_S = 300.0


def _flags() -> tuple[str, list[str]]:
    cap = torch.backends.cpu.get_cpu_capability()
    if cap in ("AVX2", "AVX512"):
        return "avx2", ["-O3", "-mavx2", "-mfma"]
    return "generic", ["-O3"]


def _clear_stale_lock(name: str) -> None:
    from torch.utils.cpp_extension import _get_build_directory
    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink()
    except FileNotFoundError:
        pass


def _build():
    from torch.utils.cpp_extension import load
    tag, flags = _flags()
    _clear_stale_lock(f"jenga_cpu_attn_{tag}")
    load(name=f"jenga_cpu_attn_{tag}", sources=[str(SOURCE)], extra_cflags=flags, is_python_module=False,
         verbose=False)
    return torch.ops.jenga_cpu.paged_attention


def load():
    """The kernel op, building it on the first call; None (and a reason in
    `unavailable_reason()`) when it cannot be built or is switched off with
    JENGA_CPU_KERNEL=0."""
    if "op" in _state:
        return _state["op"]
    op, why = None, ""
    if os.environ.get("JENGA_CPU_KERNEL", "1") == "0":
        why = "switched off (JENGA_CPU_KERNEL=0)"
    else:
        try:
            op = _build()
        except Exception as err:   # any build failure (compiler, ninja, headers) means: portable path
            why = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    _state["op"], _state["why"] = op, why
    return op


def unavailable_reason() -> str:
    """Why `load()` returned None ('' when the kernel loaded or was not tried)."""
    return str(_state.get("why", ""))


def reset() -> None:
    """Forget the load result (tests use it to exercise the fallback)."""
    _state.clear()
