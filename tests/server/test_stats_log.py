"""The server logs vLLM's periodic stats line while busy (a step observer),
and `--disable-log-stats` turns it off."""

import logging

import openai

from jenga.server.cli_serve import build_server_config


def test_a_busy_server_logs_the_stats_line(make_engine, caplog):
    from live import LiveServer
    server = LiveServer(make_engine(), log_stats_interval_s=0.001)
    try:
        with caplog.at_level(logging.INFO, logger="jenga.stats"):
            client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
            client.completions.create(model="tiny", prompt="hello", max_tokens=4, temperature=0)
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "jenga.stats"]
    assert lines and lines[0].startswith("Avg prompt throughput: ") and "KV cache usage: " in lines[0]


def test_disable_log_stats_flag(make_engine):
    import argparse

    from jenga.server.cli_serve import add_args
    p = argparse.ArgumentParser()
    add_args(p)
    engine = make_engine()
    assert build_server_config(p.parse_args(["--disable-log-stats"]), engine).log_stats_interval_s is None
    assert build_server_config(p.parse_args([]), engine).log_stats_interval_s == 10.0
