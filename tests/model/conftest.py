"""Fixtures shared by the model tests."""

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

