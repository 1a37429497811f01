"""Fixtures shared by the model tests, and the Triton interpreter switch."""

import os

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one torch thread (and steadily on a busy
    machine); the setting is process-wide, so it is put back afterwards.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The Triton kernels are tested on CPU tensors under Triton's interpreter.
# `triton.jit` reads TRITON_INTERPRET when a kernel module is imported, so it
# is set here, before any test of this folder imports one.  A run that wants
# the compiled kernels on a GPU uses scripts/gpu_check_attention.py instead.
os.environ.setdefault("TRITON_INTERPRET", "1")
