"""Loading HF folders: single file, shards with an index, tied embeddings,
and the errors a bad folder raises."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file

from jenga.model.attn_metadata import build_attn_metadata
from jenga.model.families import model_class
from jenga.model.kv_pool import KVPool
from jenga.model.loader import load_model, weight_files
from jenga.sched.step import StepPlan
from model_helpers import Pages, plan_for_model, seq, tiny_checkpoint

CFG = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=128)


def _ref_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.tensor([ids]), position_ids=torch.arange(len(ids))[None]).logits[0]


def _our_logits(model, ids):
    plan = plan_for_model(model)
    meta = build_attn_metadata(StepPlan(0, (seq(Pages(plan), "a", ids, 0, True),)), plan, model.attn_layers)
    with torch.no_grad():
        return model(torch.tensor(ids), meta.positions, meta, KVPool(plan))


def test_sharded_checkpoint_with_index(tmp_path):
    hf = tiny_checkpoint(tf.LlamaForCausalLM, tf.LlamaConfig(**CFG, tie_word_embeddings=False), tmp_path / "full")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    files = weight_files(tmp_path / "sharded")
    assert len(files) > 2 and all(f.name.startswith("model-0") for f in files)
    model = load_model(tmp_path / "sharded")
    assert model.dtype == torch.float32 and not model.arch.tie_embeddings
    ids = [3, 9, 27, 81, 115, 1, 2]
    assert (_our_logits(model, ids) - _ref_logits(hf, ids)).abs().max().item() < 1e-4


def test_tied_embeddings_share_storage(tmp_path):
    tiny_checkpoint(tf.LlamaForCausalLM, tf.LlamaConfig(**CFG, tie_word_embeddings=True), tmp_path)
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    model = load_model(tmp_path)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_bad_folders_raise(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="unsupported model_type 'bert'; known: .*llama"):
        load_model(tmp_path)
    tf.LlamaConfig(**CFG).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no model.safetensors or model.safetensors.index.json"):
        load_model(tmp_path)


def test_weights_must_match_the_model(tmp_path):
    tiny_checkpoint(tf.LlamaForCausalLM, tf.LlamaConfig(**CFG, tie_word_embeddings=False), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({**weights, "model.layers.0.mlp.extra": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="unexpected weight 'model.layers.0.mlp.extra'"):
        load_model(tmp_path)
    save_file({k: v for k, v in weights.items() if k != "model.norm.weight"}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"checkpoint lacks 1 weights, e.g. \['model.norm.weight'\]"):
        load_model(tmp_path)
    save_file({**weights, "model.norm.weight": torch.zeros(31)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"checkpoint shape \(31,\), model expects \(32,\)"):
        load_model(tmp_path)


def test_model_from_config_dict_and_object():
    cfg = tf.Qwen2Config(**CFG, use_sliding_window=True, sliding_window=8, max_window_layers=1)
    from_obj = model_class("qwen2")(cfg)
    from_dict = model_class("qwen2")(cfg.to_dict())
    assert from_obj.arch == from_dict.arch
    assert from_obj.arch.windows == (0, 8) and from_obj.arch.qkv_bias and not from_obj.arch.o_bias
    assert from_obj.layer_kv_shapes() == {0: (2, 8, 0, 0), 1: (2, 8, 8, 0)}


def test_gemma3_multimodal_checkpoint_runs_its_text_tower(tmp_path):
    text = tf.Gemma3TextConfig(**{**CFG, "vocab_size": 300}, head_dim=16, sliding_window=8,
                               layer_types=["sliding_attention", "full_attention"])
    vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=2, image_size=28, patch_size=14)
    cfg = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          image_token_index=299, boi_token_index=297, eoi_token_index=298)
    hf = tiny_checkpoint(tf.Gemma3ForConditionalGeneration, cfg, tmp_path)
    names = load_file(tmp_path / "model.safetensors").keys()
    assert any(n.startswith("language_model.model.") for n in names) and any("vision_tower" in n for n in names)
    model = load_model(tmp_path)
    assert model.arch.windows == (8, 0) and model.arch.qk_norm
    ids = [2, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]
    assert (_our_logits(model, ids) - _ref_logits(hf, ids)).abs().max().item() < 1e-4
