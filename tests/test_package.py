"""`import jenga` is light: vLLM's top-level names resolve lazily, and only
`LLM` brings torch in."""

import os
import subprocess
import sys

import pytest


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True, timeout=120).stdout.strip()


def test_import_is_torch_free_and_names_are_lazy():
    out = _run("import sys, jenga\n"
               "from jenga import SamplingParams, RequestOutput\n"
               "print('torch' in sys.modules, SamplingParams(logprobs=1).logprobs, RequestOutput.__name__)\n"
               "from jenga import LLM\n"
               "print('torch' in sys.modules, LLM.__module__)")
    assert out.splitlines() == ["False 1 RequestOutput", "True jenga.engine.llm"]


def test_unknown_name_is_an_attribute_error():
    import jenga
    with pytest.raises(AttributeError, match="Nope"):
        jenga.Nope  # noqa: B018
    assert {"LLM", "SamplingParams", "RequestOutput"} <= set(dir(jenga))
