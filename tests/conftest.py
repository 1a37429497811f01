import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "memory"))

# The Triton kernels are tested on CPU tensors under Triton's interpreter.
# Triton reads TRITON_INTERPRET when a jit function is defined, its own
# library's included, and some imports (transformers' continuous batching)
# load triton early, so it is set here, before any test module is imported.
# The compiled kernels on a GPU are scripts/gpu_check_attention.py's job.
os.environ.setdefault("TRITON_INTERPRET", "1")
