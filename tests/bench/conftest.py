import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "server"))

from live import MAX_MODEL_LEN, make_tiny_engine  # noqa: E402
from tiny_model import build_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def make_engine(tmp_path_factory):
    model_dir = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-bench"), max_position_embeddings=MAX_MODEL_LEN)
    return lambda max_waiting=None, **kw: make_tiny_engine(model_dir, max_waiting, **kw)
