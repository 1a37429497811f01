"""The CLI speaks vLLM: its flag names (Jenga's kept as aliases), one
byte-size syntax everywhere, help from the config docs, `plan --list`, and
every user mistake as one line with exit code 2."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from jenga.cli import main
from jenga.cliutil import ByteSizeError, field_docs, parse_bytes
from jenga.engine import cli_generate
from jenga.engine.config import EngineConfig
from jenga.server.cli_serve import build_engine_config, build_parser


@pytest.mark.parametrize("text, value", [
    ("1073741824", 2**30), ("1G", 2**30), ("1GiB", 2**30), ("1gib", 2**30), ("1.5GB", 1_500_000_000),
    ("1g", 10**9), ("512MiB", 512 * 2**20), ("1.5G", 3 * 2**29), ("64K", 65536), ("2 kB", 2000), ("1T", 2**40),
])
def test_one_byte_size_syntax(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("bad", ["", "lots", "-1", "0", "1.5", "MiB", "1iB", "1XB", "1e9"])
def test_bad_byte_sizes(bad):
    with pytest.raises(ByteSizeError, match="byte size"):
        parse_bytes(bad)


def _generate_args(argv):
    p = argparse.ArgumentParser()
    cli_generate.add_args(p)
    return p.parse_args(["hi", *argv])


def test_vllm_flags_and_jenga_aliases_build_the_same_config():
    vllm = ["--kv-cache-memory-bytes", "1G", "--block-size", "8", "--max-model-len", "512",
            "--gpu-memory-utilization", "0.5", "--tensor-parallel-size", "1", "--kv-cache-dtype", "auto",
            "--enforce-eager", "--generation-config", "vllm", "--chat-template", "{{ x }}", "--max-num-seqs", "4"]
    jenga = ["--kv-cache-memory", "1GiB", "--page-tokens", "8", "--max-model-len", "512",
             "--gpu-memory-utilization", "0.5", "--enforce-eager", "--generation-config", "vllm",
             "--chat-template", "{{ x }}", "--max-num-seqs", "4"]
    a, _ = cli_generate.build(_generate_args(vllm))
    b, _ = cli_generate.build(_generate_args(jenga))
    assert a == b and (a.kv_cache_memory, a.page_tokens, a.max_num_seqs) == (2**30, 8, 4)
    serve = build_engine_config(build_parser().parse_args(["/m", *vllm]))
    assert serve == EngineConfig(**{**{f: getattr(a, f) for f in a.__dataclass_fields__}, "model": "/m"})


def test_speculative_config_flag():
    args = _generate_args(["--speculative-config", json.dumps({"model": "/d", "num_speculative_tokens": 3})])
    cfg, _ = cli_generate.build(args)
    assert (cfg.speculative_model, cfg.num_speculative_tokens) == ("/d", 3)
    serve = build_engine_config(build_parser().parse_args(["/m", "--speculative-config",
                                                           '{"model": "/d", "num_speculative_tokens": 2}']))
    assert serve.num_speculative_tokens == 2


def test_help_comes_from_the_field_docs():
    docs = field_docs(EngineConfig)
    assert docs["max_num_seqs"] == "most requests running at once."       # inherited from SchedulerConfig
    assert docs["page_tokens"].startswith("tokens per small page")
    p = argparse.ArgumentParser()
    cli_generate.add_args(p)
    text = " ".join(p.format_help().split())
    assert "--max-num-seqs MAX_NUM_SEQS most requests running at once (default: 256)" in text
    assert "--kv-cache-memory-bytes BYTES, --kv-cache-memory BYTES bytes of the KV pool" in text
    assert "--block-size PAGE_TOKENS, --page-tokens PAGE_TOKENS tokens per small page" in text


def test_plan_list_and_vllm_flags(capsys):
    assert main(["plan", "--list"]) == 0
    out = capsys.readouterr().out
    assert "llama-3.1-8b" in out and "max context" in out
    assert main(["plan", "llama-3.1-8b", "--kv-cache-memory-bytes", "1G", "--block-size", "16",
                 "--tensor-parallel-size", "1", "--allocator", "jenga", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["kv_budget_bytes"] == 2**30


@pytest.mark.parametrize("argv, message", [
    (["plan"], "plan needs a MODEL"),
    (["generate", "--model", "/path/to/model", "hi"], "looks like a placeholder"),
    (["generate", "--model", "nobody/nothing-here", "hi"], "huggingface-cli download nobody/nothing-here"),
    (["generate", "--gpu-memory-utilization", "2", "hi"], "gpu_memory_utilization must be in (0, 1]"),
    (["serve", "--kv-cache-dtype", "int3"], "kv_cache_dtype"),
    (["serve", "--skip-tokenizer-init"], "the server needs a tokenizer"),
    (["serve", "--kv-cache-memory-bytes", "lots"], "not a byte size: 'lots'"),
])
def test_user_mistakes_are_one_line_and_exit_2(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_base_install_without_torch_says_which_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from jenga.cli import main; sys.exit(main(['generate', 'hi']))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("jenga generate: error: this needs the torch extra (module 'torch' is missing): "
                                "pip install 'jenga[torch]'")


def test_every_flag_of_every_subcommand_has_help():
    import importlib

    from jenga.cli import build_parser

    missing = []

    def walk(parser, name):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for n, sp in a.choices.items():
                    walk(sp, f"{name} {n}")
            elif a.option_strings and a.dest != "help" and not a.help:
                missing.append(f"{name} {a.option_strings[0]}")

    walk(build_parser(), "jenga")
    for cmd, mod in (("generate", "jenga.engine.cli_generate"), ("serve", "jenga.server.cli_serve"),
                     ("demo", "jenga.demo"), ("bench throughput", "jenga.bench.throughput"),
                     ("bench serve", "jenga.bench.serve_client"), ("bench paper", "jenga.bench.paper"),
                     ("bench prefix", "jenga.bench.prefix"), ("bench utilisation", "jenga.bench.utilisation")):
        sub = argparse.ArgumentParser(prog=f"jenga {cmd}")
        importlib.import_module(mod).add_args(sub)
        sub.format_help()   # a help text argparse cannot format would fail here
        walk(sub, f"jenga {cmd}")
    assert missing == []
