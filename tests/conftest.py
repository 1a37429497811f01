"""Suite-wide settings.  The default run is deterministic: Hypothesis is
derandomised (the same examples on every machine, CI or not) and keeps no
example database.  Tests marked `slow` (long or randomised runs) run only
with JENGA_SLOW=1."""

import os
import sys

import pytest
from hypothesis import settings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "memory"))

# The Triton kernels are tested on CPU tensors under Triton's interpreter.
# Triton reads TRITON_INTERPRET when a jit function is defined, its own
# library's included, and some imports (transformers' continuous batching)
# load triton early, so it is set here, before any test module is imported.
# The compiled kernels on a GPU are scripts/gpu_check_attention.py's job.
os.environ.setdefault("TRITON_INTERPRET", "1")

SLOW = os.environ.get("JENGA_SLOW") == "1"

settings.register_profile("jenga", derandomize=True, database=None)
settings.load_profile("jenga")


def pytest_collection_modifyitems(config, items):
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow: set JENGA_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
