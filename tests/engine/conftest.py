"""Fixtures shared by the engine tests: the converted SmolLM2 folder (made
once, in the same cache the CLI uses) and a tiny byte-level tokenizer."""

import pytest
from engine_helpers import build_byte_tokenizer

from jenga.engine.tokenizer import Tokenizer


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Engines here run with cpu_threads=1 (fast for tiny batches, and on a
    busy machine); torch's setting is process-wide, so put it back."""
    import torch
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct as a HF folder ($JENGA_CACHE or ~/.cache/jenga);
    the first session converts it (~10 s), later ones reuse it."""
    from jenga.model.gguf_convert import default_model_path
    try:
        return default_model_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smol_tokenizer(smollm2_dir):
    return Tokenizer.from_pretrained(smollm2_dir)


@pytest.fixture()
def byte_tokenizer() -> Tokenizer:
    return build_byte_tokenizer(eos="</s>")
