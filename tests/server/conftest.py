import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from live import MAX_MODEL_LEN, LiveServer, make_tiny_engine  # noqa: E402
from tiny_model import build_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), max_position_embeddings=MAX_MODEL_LEN)


@pytest.fixture(scope="session")
def make_engine(tiny_model_dir):
    """make_engine(max_waiting=None, **EngineConfig overrides) -> engine."""
    return lambda max_waiting=None, **kw: make_tiny_engine(tiny_model_dir, max_waiting, **kw)


@pytest.fixture(scope="module")
def live(make_engine):
    server = LiveServer(make_engine())
    yield server
    server.stop()
