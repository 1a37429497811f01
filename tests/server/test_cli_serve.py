"""`jenga serve` options: byte sizes, engine config, server config."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from jenga.server.cli_serve import build_engine_config, build_parser, build_server_config, parse_bytes


def test_parse_bytes():
    assert parse_bytes("268435456") == 268435456
    assert parse_bytes("256MiB") == 256 * 2**20
    assert parse_bytes("2GiB") == 2 * 2**30
    assert parse_bytes("1.5 GB") == 1_500_000_000
    for bad in ("", "12XB", "-3", "0", "MiB"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_bytes(bad)


def test_flags_reach_the_engine_config():
    args = build_parser().parse_args(["/m", "--kv-cache-memory", "16MiB", "--allocator", "max-page",
                                      "--max-num-seqs", "8", "--max-num-batched-tokens", "512",
                                      "--no-enable-prefix-caching", "--max-model-len", "1024"])
    cfg = build_engine_config(args)
    assert (cfg.model, cfg.kv_cache_memory, cfg.allocator, cfg.max_num_seqs, cfg.max_num_batched_tokens,
            cfg.enable_prefix_caching, cfg.max_model_len) == ("/m", 16 * 2**20, "max-page", 8, 512, False, 1024)
    assert (args.host, args.port) == ("127.0.0.1", 8000)


def test_defaults_leave_the_engine_defaults():
    from jenga.engine.config import EngineConfig

    assert build_engine_config(build_parser().parse_args([])) == EngineConfig()


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="allocator"):
        build_engine_config(build_parser().parse_args(["--allocator", "buddy"]))


def test_server_config_name_and_api_key(monkeypatch):
    engine = SimpleNamespace(model_path=SimpleNamespace(name="SmolLM2-135M-Instruct"))
    monkeypatch.setenv("JENGA_API_KEY", "from-env")
    cfg = build_server_config(build_parser().parse_args([]), engine)
    assert (cfg.served_model_name, cfg.api_key) == ("SmolLM2-135M-Instruct", "from-env")
    cfg = build_server_config(build_parser().parse_args(["/x/tiny/", "--api-key", "flag",
                                                         "--served-model-name", "t"]), engine)
    assert (cfg.served_model_name, cfg.api_key) == ("t", "flag")
    monkeypatch.delenv("JENGA_API_KEY")
    cfg = build_server_config(build_parser().parse_args(["/x/tiny/"]), engine)
    assert (cfg.served_model_name, cfg.api_key) == ("/x/tiny", None)


def test_request_limit_and_cors_flags():
    args = build_parser().parse_args(["--max-request-bytes", "2MiB", "--allowed-origins", "http://a", "http://b"])
    engine = SimpleNamespace(model_path=SimpleNamespace(name="m"))
    cfg = build_server_config(args, engine)
    assert (cfg.max_body_bytes, cfg.allowed_origins) == (2 * 2**20, ("http://a", "http://b"))
    cfg = build_server_config(build_parser().parse_args([]), engine)
    assert (cfg.max_body_bytes, cfg.allowed_origins) == (None, ())   # derived from the context; no CORS


def test_conflicting_sizes_refuse_to_start_in_one_line(tiny_model_dir, capsys):
    """A pool of 4 pages cannot hold the 256-token context asked for."""
    from jenga.server.cli_serve import serve_main

    args = build_parser().parse_args([str(tiny_model_dir), "--device", "cpu", "--kv-cache-memory", "64KiB",
                                      "--max-model-len", "256"])
    assert serve_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "max_model_len=256 (--max-model-len)" in err and "--kv-cache-memory" in err
