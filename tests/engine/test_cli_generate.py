"""`jenga generate`: options -> config and params, and a real run."""

import argparse
import json

from engine_helpers import tiny_checkpoint

from jenga.engine import cli_generate


def parse(argv):
    p = argparse.ArgumentParser()
    cli_generate.add_args(p)
    return p.parse_args(argv)


def test_cli_options_build_config_and_params():
    args = parse(["hello", "world", "--max-tokens", "5", "--temperature", "0.7", "--stop", "X", "--stop", "Y",
                  "--allocator", "max-page", "--kv-cache-memory", "8MiB", "--no-enable-prefix-caching",
                  "--seed", "3", "--engine-seed", "9", "--max-model-len", "512"])
    cfg, params = cli_generate.build(args)
    assert args.prompts == ["hello", "world"]
    assert (cfg.allocator, cfg.kv_cache_memory, cfg.enable_prefix_caching, cfg.seed, cfg.max_model_len) == \
        ("max-page", 8 * 2**20, False, 9, 512)
    assert (params.max_tokens, params.temperature, params.stop, params.seed) == (5, 0.7, ("X", "Y"), 3)


def test_cli_rejects_bad_values_before_loading_anything(capsys):
    assert cli_generate.main(parse(["hi", "--top-p", "0"])) == 2
    assert "top_p" in capsys.readouterr().err
    assert cli_generate.main(parse(["hi", "--allocator", "nope"])) == 2
    assert "allocator" in capsys.readouterr().err


def test_generate_runs_end_to_end(tmp_path, capsys):
    tiny_checkpoint("llama", tmp_path)
    args = parse(["abc", "hello there", "--model", str(tmp_path), "--max-tokens", "6", "--ignore-eos",
                  "--json", "--device", "cpu", "--cpu-threads", "1", "--kv-cache-memory", "1MiB", "--page-tokens", "4"])
    assert cli_generate.main(args) == 0
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert [x["prompt"] for x in lines] == ["abc", "hello there"]
    assert [len(x["token_ids"]) for x in lines] == [6, 6]
    assert all(x["finish_reason"] == "length" for x in lines)
    assert [x["num_prompt_tokens"] for x in lines] == [3, 11]
    assert "2 request(s), 12 tokens" in captured.err


def test_stream_prints_the_first_request(tmp_path, capsys):
    tiny_checkpoint("llama", tmp_path)
    args = parse(["abc", "--model", str(tmp_path), "--max-tokens", "5", "--ignore-eos", "--stream",
                  "--device", "cpu", "--cpu-threads", "1", "--kv-cache-memory", "1MiB", "--page-tokens", "4"])
    assert cli_generate.main(args) == 0
    assert "1 request(s), 5 tokens" in capsys.readouterr().err


def test_missing_tokenizer_and_quantized_model_are_one_line(tmp_path, capsys):
    from jenga.cli import main
    tiny_checkpoint("llama", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "quantization_config": {"quant_method": "gptq"}}))
    assert main(["generate", "--model", str(tmp_path), "--device", "cpu", "hi"]) == 2
    assert "quantized weights" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "tokenizer.json").unlink()
    assert main(["generate", "--model", str(tmp_path), "--device", "cpu", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no tokenizer.json" in err and len(err.splitlines()) == 1
