"""Jenga: an LLM-serving engine whose memory manager holds every kind of model
state (full / sliding / chunked attention KV, Mamba states, cross-attention KV,
vision embeddings, draft-model KV) in one paged pool.  See docs/ and
../shared/DESIGN.md for the map.

`from jenga import LLM, SamplingParams, RequestOutput` works as in vLLM.
The names resolve lazily (module `__getattr__`), so `import jenga` stays
light and never imports torch; only touching `LLM` loads the engine.
"""

from __future__ import annotations

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first use)
_LAZY = {
    "LLM": "jenga.engine.llm",
    "SamplingParams": "jenga.sched.params",
    "RequestOutput": "jenga.engine.outputs",
    "CompletionOutput": "jenga.engine.outputs",
    "Logprob": "jenga.engine.outputs",
    "EngineConfig": "jenga.engine.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jenga' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value   # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
