"""GGUF -> HF folder conversion of the bundled SmolLM2-135M-Instruct.

The folder is made once (in $JENGA_CACHE or ~/.cache/jenga, the cache the
CLI uses) and reused.  The checks through transformers (its own GGUF
loader, ~20 s, and a greedy chat) are slow tests (JENGA_SLOW=1).
"""

import json
import os
import time

import numpy as np
import pytest
import torch

from jenga.model import gguf_convert
from jenga.model.gguf_convert import _hf_name, cache_root, convert_smollm2, default_model_path, unpermute_qk

SLOW = pytest.mark.skipif(os.environ.get("JENGA_SLOW") != "1", reason="slow: set JENGA_SLOW=1")


@pytest.fixture(scope="module")
def folder():
    try:
        return default_model_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_unpermute_qk_restores_half_split_rows():
    # one head of 4 rows: HF order [h0a, h0b, h1a, h1b] (two halves); llama.cpp
    # stores interleaved pairs [h0a, h1a, h0b, h1b]
    hf = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)    # 2 heads x 4 rows
    gguf_rows = [0, 2, 1, 3, 4, 6, 5, 7]
    assert np.array_equal(unpermute_qk(hf[gguf_rows], num_heads=2), hf)
    with pytest.raises(ValueError, match="num_heads"):
        unpermute_qk(hf, num_heads=3)


def test_tensor_names():
    assert _hf_name("blk.7.attn_q.weight") == "model.layers.7.self_attn.q_proj.weight"
    assert _hf_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert _hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert _hf_name("output_norm.weight") == "model.norm.weight"
    with pytest.raises(ValueError, match="unexpected GGUF tensor"):
        _hf_name("blk.0.mystery.weight")


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("JENGA_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("JENGA_CACHE")
    assert cache_root() == cache_root().home() / ".cache" / "jenga"


def test_folder_contents(folder):
    cfg = json.loads((folder / "config.json").read_text())
    assert (cfg["model_type"], cfg["hidden_size"], cfg["num_hidden_layers"]) == ("llama", 576, 30)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (9, 3, 64)
    assert (cfg["vocab_size"], cfg["rope_theta"], cfg["tie_word_embeddings"]) == (49152, 100000.0, True)
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == 2
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and "<|im_start|>" in tok_cfg["chat_template"]
    from safetensors import safe_open
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        assert f.get_tensor("model.layers.0.self_attn.k_proj.weight").shape == (192, 576)
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.float32
    assert len(names) == 272 and "lm_head.weight" not in names


def test_conversion_is_idempotent(folder):
    weights = folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert convert_smollm2(folder) == folder
    assert time.perf_counter() - t0 < 1.0
    assert weights.stat().st_mtime_ns == before


def test_bad_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        convert_smollm2(tmp_path / "x", dtype="int4")
    assert not (tmp_path / "x").exists()


@SLOW
@pytest.mark.slow
def test_transformers_greedy_chat_is_sensible(folder):
    """A wrong Q/K permutation or tokenizer gives gibberish here (the
    engine's own SmolLM2 tests check the same through Jenga, quickly)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, attn_implementation="eager")
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, tokenize=False)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).startswith("The capital of France is Paris")


@SLOW
@pytest.mark.slow
def test_logits_equal_transformers_gguf_load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = gguf_convert.smollm2_gguf_path()
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                               attn_implementation="eager")
    ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    ours = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, attn_implementation="eager")
    ours_tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    text = "<|im_start|>user\nWrite 3 words about 2024 and café ☕.<|im_end|>\n<|im_start|>assistant\n"
    ids = ref_tok(text, return_tensors="pt")["input_ids"]
    assert ours_tok(text, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    pos = torch.arange(ids.shape[1]).unsqueeze(0)
    with torch.no_grad():
        diff = (ours(ids, position_ids=pos).logits - ref(ids, position_ids=pos).logits).abs().max().item()
    assert diff <= 1e-5
