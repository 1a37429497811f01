"""cliutil: options built from config dataclasses, including auto fields."""

from __future__ import annotations

import argparse

import pytest

from jenga.cliutil import add_dataclass_args, from_args
from jenga.sched.config import SchedulerConfig


def _parse(argv):
    p = argparse.ArgumentParser()
    add_dataclass_args(p, SchedulerConfig)
    return p, p.parse_args(argv)


def test_auto_field_defaults_to_none_and_takes_an_int():
    p, args = _parse([])
    assert from_args(SchedulerConfig, args).mamba_checkpoint_interval is None
    assert "(default: auto)" in " ".join(p.format_help().split())
    _, args = _parse(["--mamba-checkpoint-interval", "1024", "--no-enable-prefix-caching"])
    cfg = from_args(SchedulerConfig, args)
    assert cfg.mamba_checkpoint_interval == 1024 and cfg.enable_prefix_caching is False


def test_bad_value_names_the_field():
    _, args = _parse(["--mamba-checkpoint-interval", "0"])
    with pytest.raises(ValueError, match="mamba_checkpoint_interval"):
        from_args(SchedulerConfig, args)
