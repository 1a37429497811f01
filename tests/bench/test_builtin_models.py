"""Built-in demo models: their shapes, one build into a folder the engine
loads, and `builtin:NAME` resolution (the cache is redirected to tmp)."""

import json

import pytest

from jenga.bench import builtin_models as bm
from jenga.memory.shapes.hf import shape_from_path


def test_configs_have_the_families_layer_patterns():
    g = bm.builtin_config("gemma2-small")
    assert (g.model_type, g.num_hidden_layers, g.sliding_window, g.max_position_embeddings) == ("gemma2", 6, 128, 4096)
    assert g.layer_types == ["sliding_attention", "full_attention"] * 3
    assert (g.attn_logit_softcapping, g.final_logit_softcapping) == (50.0, 30.0)
    m = bm.builtin_config("ministral-small")
    assert m.model_type == "ministral"
    assert m.layer_types == (["sliding_attention"] * 3 + ["full_attention"]) * 2
    assert bm.builtin_config("gemma2-small", num_hidden_layers=2).layer_types == ["sliding_attention",
                                                                                    "full_attention"]
    with pytest.raises(ValueError, match="unknown built-in 'llama-small'; known: gemma2-small, ministral-small"):
        bm.builtin_config("llama-small")
    with pytest.raises(ValueError, match="unknown built-in"):
        bm.describe("nope")


def _tokenizer_dir(tmp_path):
    """A stand-in for SmolLM2's tokenizer files (only copied, never parsed here)."""
    src = tmp_path / "tok"
    src.mkdir()
    (src / "tokenizer.json").write_text('{"stand": "in"}')
    (src / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}')
    return src


def test_build_model_folder_writes_a_loadable_checkpoint(tmp_path):
    cfg = bm.builtin_config("ministral-small", hidden_size=32, intermediate_size=64, head_dim=8,
                            vocab_size=300)
    tok = _tokenizer_dir(tmp_path)
    out = bm.build_model_folder(cfg, tmp_path / "m", seed=3, tokenizer_dir=tok)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json"]
    assert (out / "tokenizer.json").read_text() == '{"stand": "in"}'
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    shape = shape_from_path(out, dtype="float32")
    kinds = [(s.kind, s.window) for s in shape.layers]
    assert kinds == ([("sliding", 128)] * 3 + [("full", 0)]) * 2
    from jenga.model.loader import iter_weights, load_model
    model = load_model(out)          # every weight present, right shapes
    assert model.arch.windows == (128, 128, 128, 0) * 2
    # the seed decides the weights
    again = bm.build_model_folder(cfg, tmp_path / "m2", seed=3, tokenizer_dir=tok)
    a, b = dict(iter_weights(out)), dict(iter_weights(again))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    with pytest.raises(FileExistsError):
        bm.build_model_folder(cfg, out, tokenizer_dir=tok)


def test_builtin_path_builds_once_and_resolves(tmp_path, monkeypatch):
    monkeypatch.setenv("JENGA_CACHE", str(tmp_path / "cache"))
    tok = _tokenizer_dir(tmp_path)
    monkeypatch.setattr(bm, "_smollm2_dir", lambda: tok)
    small = dict(bm.BUILTINS["gemma2-small"][1], hidden_size=32, intermediate_size=64, head_dim=8, vocab_size=300)
    monkeypatch.setitem(bm.BUILTINS, "gemma2-small", ("gemma2", small, "tiny"))
    path = bm.builtin_model_path("gemma2-small")
    assert path == tmp_path / "cache" / "builtin-gemma2-small"
    stamp = json.loads((path / bm.STAMP).read_text())
    assert (stamp["name"], stamp["seed"], stamp["config"]["hidden_size"]) == ("gemma2-small", 0, 32)
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert bm.resolve_model("builtin:gemma2-small") == path            # reused, not rebuilt
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["builtin-gemma2-small"]   # no temp left
    # a changed recipe rebuilds in place
    monkeypatch.setitem(bm.BUILTINS, "gemma2-small", ("gemma2", dict(small, intermediate_size=96), "tiny"))
    assert bm.builtin_model_path("gemma2-small") == path
    assert json.loads((path / "config.json").read_text())["intermediate_size"] == 96
    assert bm.resolve_model("/some/folder") == type(path)("/some/folder")
    assert bm.resolve_model(None) is None
    with pytest.raises(ValueError, match="unknown built-in 'x'"):
        bm.resolve_model("builtin:x")
