"""Presets: the real shapes of the paper's models.  Layer counts per kind,
exact bytes per token, and parameter counts within 1% of the published
sizes (model cards)."""

from __future__ import annotations

from collections import Counter

import pytest

from jenga.memory.shapes.hf import shape_from_config
from jenga.memory.shapes.presets import CONFIGS, PRESETS, get_preset

LAYERS = {
    "llama-3.2-11b-vision": {"full": 32, "cross": 8},
    "gemma-2-9b": {"sliding(window=4096)": 21, "full": 21},
    "gemma-2-27b": {"sliding(window=4096)": 23, "full": 23},
    "gemma-3-12b": {"sliding(window=1024)": 40, "full": 8},
    "gemma-3-27b": {"sliding(window=1024)": 52, "full": 10},
    "ministral-8b": {"sliding(window=32768)": 27, "full": 9},
    "jamba-1.5-mini": {"mamba": 28, "full": 4},
    "llama-3.1-8b": {"full": 32},
    "llama-3.1-70b": {"full": 80},
    "llava-onevision-7b": {"full": 28, "vision": 1},
    "character-ai-70b": {"sliding(window=1024)": 27, "full": 13},
    "llama-4-scout": {"chunked(chunk=8192)": 36, "full": 12},
    "llama-4-maverick": {"chunked(chunk=8192)": 36, "full": 12},
    "pyramidkv-70b": {"budget(budget=2048)": 20, "budget(budget=1024)": 20, "budget(budget=512)": 20,
                      "budget(budget=256)": 20},
}

# bytes of state per token summed over the per-token layers (bf16 K and V)
BYTES_PER_TOKEN = {
    "llama-3.1-8b": 32 * 2 * 8 * 128 * 2,
    "llama-3.1-70b": 80 * 2 * 8 * 128 * 2,
    "gemma-2-9b": 42 * 2 * 8 * 256 * 2,
    "gemma-2-27b": 46 * 2 * 16 * 128 * 2,
    "gemma-3-12b": 48 * 2 * 8 * 256 * 2,
    "ministral-8b": 36 * 2 * 8 * 128 * 2,
    "llama-3.2-11b-vision": 40 * 2 * 8 * 128 * 2,
    "llava-onevision-7b": 28 * 2 * 4 * 128 * 2 + 3584 * 2,
    "character-ai-70b": 40 * 2 * 8 * 128 * 2,
    "llama-4-scout": 48 * 2 * 8 * 128 * 2,
}

# published total parameters (model cards / HF safetensors metadata)
PUBLISHED = {
    "llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.6e9, "gemma-2-9b": 9.24e9, "gemma-2-27b": 27.2e9,
    "gemma-3-12b": 12.2e9, "gemma-3-27b": 27.4e9, "ministral-8b": 8.02e9, "jamba-1.5-mini": 51.6e9,
    "llama-3.2-11b-vision": 10.67e9, "llava-onevision-7b": 8.03e9,
    "llama-4-scout": 109e9, "llama-4-maverick": 402e9,
}


def test_every_preset_is_listed():
    assert set(PRESETS) == set(LAYERS)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_counts_per_kind(name):
    assert dict(Counter(s.describe() for s in get_preset(name).layers)) == LAYERS[name]


@pytest.mark.parametrize("name", sorted(BYTES_PER_TOKEN))
def test_bytes_per_token(name):
    assert sum(s.bytes_per_token for s in get_preset(name).layers) == BYTES_PER_TOKEN[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_published_sizes(name):
    shape = get_preset(name)
    assert shape.weights_bytes / 2 == pytest.approx(PUBLISHED[name], rel=0.01)


@pytest.mark.parametrize("name", ["llama-4-scout", "llama-4-maverick"])
def test_llama4_pattern_and_active_parameters(name):
    """17B active of 109B / 402B (the model cards); layer 3, 7, ... global."""
    shape = get_preset(name)
    assert shape.active_params == pytest.approx(17e9, rel=0.02)
    assert [i for i, s in enumerate(shape.layers) if s.kind == "full"] == list(range(3, 48, 4))
    assert all(s.chunk == 8192 for s in shape.layers if s.kind == "chunked")


def test_jamba_moe_and_mamba_state():
    shape = get_preset("jamba-1.5-mini")
    assert shape.active_params == pytest.approx(12e9, rel=0.02)
    assert [i for i, s in enumerate(shape.layers) if s.kind == "full"] == [4, 12, 20, 28]
    mamba = shape.layers[0]
    # conv (8192, 4) in bf16 + SSM (8192, 16) in fp32
    assert (mamba.conv_state, mamba.ssm_state, mamba.state_dtype) == ((8192, 4), (8192, 16), "float32")
    assert mamba.state_bytes == 8192 * 4 * 2 + 8192 * 16 * 4 == 589824
    assert shape.max_context == 262144


def test_mllama_cross_layers_and_image_tokens():
    shape = get_preset("llama-3.2-11b-vision")
    assert [i for i, s in enumerate(shape.layers) if s.kind == "cross"] == [3, 8, 13, 18, 23, 28, 33, 38]
    assert shape.image_tokens_per_image == 4 * 1601 == 6404
    assert (shape.hidden_size, shape.max_context) == (4096, 131072)


def test_ministral_and_gemma_patterns():
    ministral = get_preset("ministral-8b").layers
    assert [i for i, s in enumerate(ministral) if s.kind == "full"] == list(range(3, 36, 4))
    gemma3 = get_preset("gemma-3-27b").layers
    assert [i for i, s in enumerate(gemma3) if s.kind == "full"] == list(range(5, 62, 6))
    assert get_preset("gemma-2-9b").layers[0].kind == "sliding"


def test_llava_onevision_vision_layer():
    shape = get_preset("llava-onevision-7b")
    assert shape.layers[-1].kind == "vision" and shape.layers[-1].hidden_size == 3584
    assert shape.image_tokens_per_image == 729
    assert "729" in shape.source and "crop" in shape.source


def test_technique_presets_keep_70b_weights():
    base = get_preset("llama-3.1-70b")
    for name in ("character-ai-70b", "pyramidkv-70b"):
        shape = get_preset(name)
        assert (shape.weights_bytes, shape.active_params, shape.max_context) == \
            (base.weights_bytes, base.active_params, base.max_context)
    cai = get_preset("character-ai-70b")
    # owner i covers layers 2i and 2i+1; layer 6k+5 is global, so owners 2, 5, 8, ... are full
    assert [i for i, s in enumerate(cai.layers) if s.kind == "full"] == list(range(2, 40, 3))
    assert "character.ai" in cai.source and "2024" in cai.source
    pyramid = get_preset("pyramidkv-70b")
    assert [pyramid.layers[i].budget for i in (0, 19, 20, 39, 40, 59, 60, 79)] == \
        [2048, 2048, 1024, 1024, 512, 512, 256, 256]
    assert {s.kind for s in pyramid.layers} == {"budget"} and "budget" in pyramid.source


def test_presets_go_through_shape_from_config():
    for name in ("llama-3.1-8b", "gemma-3-12b", "llama-3.2-11b-vision"):
        cfg, source = CONFIGS[name]
        assert shape_from_config(cfg, name=name, source=source) == get_preset(name)


def test_sources_name_the_hf_repo():
    repos = {"llama-3.2-11b-vision": "meta-llama/Llama-3.2-11B-Vision", "gemma-2-9b": "google/gemma-2-9b",
             "jamba-1.5-mini": "ai21labs/AI21-Jamba-1.5-Mini", "ministral-8b": "mistralai/Ministral-8B",
             "llava-onevision-7b": "llava-hf/llava-onevision-qwen2-7b", "gemma-3-27b": "google/gemma-3-27b"}
    for name, repo in repos.items():
        assert repo in get_preset(name).source


def test_unknown_preset_lists_known_names():
    with pytest.raises(ValueError, match="llama-3.1-8b") as err:
        get_preset("gpt-5")
    assert "'gpt-5'" in str(err.value)
