"""The cpu attention backend against the portable path, path by path.

Every case of test_attention (scattered pages, NaN-poisoned pools, released
window pages, GQA/MHA, windows, chunks, soft-capping, sinks, fresh prompts,
long chunks after a prefix) runs on both backends; each of the cpu
backend's three paths is seen to run, and a kernel that cannot be built
leaves the portable path answering."""

from __future__ import annotations

import shutil

import pytest
import torch

import test_attention
from jenga.model import cpu_attention, cpu_kernel
from test_attention import CASES, run_case


@pytest.fixture
def spy(monkeypatch):
    """Counts of the cpu backend's paths taken during a test."""
    seen = {"fresh": 0, "gather": 0, "kernel": 0}
    for name, fn in (("fresh", cpu_attention.fresh_batch), ("gather", cpu_attention.gather_batch),
                     ("kernel", cpu_attention.kernel_batch)):
        def wrapped(*a, _fn=fn, _name=name):
            seen[_name] += 1
            return _fn(*a)
        monkeypatch.setattr(cpu_attention, f"{name}_batch", wrapped)
    return seen


@pytest.mark.parametrize("name", sorted(CASES))
def test_cpu_matches_portable(name):
    cpu, _ = run_case(**CASES[name], backend="cpu")
    portable, _ = run_case(**CASES[name], backend="portable")
    assert (cpu - portable).abs().max().item() < 1e-5


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("name", ["mixed_batch_gqa", "softcap_sliding", "sinks_sliding", "chunked_local"])
def test_kernel_head_sizes_compiled_in(name, head_dim, monkeypatch):
    """The kernel unrolls head sizes 64 and 128 at compile time; the other
    cases run its any-size loop (D=8)."""
    monkeypatch.setattr(test_attention, "D", head_dim)
    cpu, ref = run_case(**CASES[name], backend="cpu")
    assert (cpu.double() - ref).abs().max().item() < 1e-4


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler")
def test_kernel_builds_and_takes_decodes_and_short_chunks(spy):
    assert cpu_kernel.load() is not None, cpu_kernel.unavailable_reason()
    run_case(**CASES["mixed_batch_gqa"], backend="cpu")      # 3 batches: decodes, two 5-token chunks, one 7
    assert spy == {"fresh": 0, "gather": 0, "kernel": 3}


def test_fresh_prompts_and_long_chunks_avoid_the_kernel(spy):
    run_case(**CASES["fresh_prompts_gqa"], backend="cpu")    # buckets of 7, 3 and 1 tokens, all from position 0
    assert spy["fresh"] == 3 and spy["kernel"] == 0
    run_case(**CASES["long_chunk_after_prefix"], backend="cpu")
    assert spy["gather"] == 1 and spy["kernel"] == 1       # the 21-token pair, then the decode


def test_failed_build_falls_back_to_portable(monkeypatch):
    def broken():
        raise OSError("c++: command not found")
    cpu_kernel.reset()
    monkeypatch.setattr(cpu_kernel, "_build", broken)
    try:
        assert cpu_kernel.load() is None
        assert cpu_kernel.unavailable_reason() == "OSError: c++: command not found"
        for name in ("decode_batch", "sinks_sliding", "chunked_local"):
            cpu, ref = run_case(**CASES[name], backend="cpu")
            portable, _ = run_case(**CASES[name], backend="portable")
            assert torch.equal(cpu, portable)
    finally:
        cpu_kernel.reset()


def test_switched_off_by_environment(monkeypatch):
    cpu_kernel.reset()
    monkeypatch.setenv("JENGA_CPU_KERNEL", "0")
    try:
        assert cpu_kernel.load() is None
        assert "JENGA_CPU_KERNEL=0" in cpu_kernel.unavailable_reason()
    finally:
        cpu_kernel.reset()


def test_a_stale_build_lock_is_cleared(tmp_path, monkeypatch):
    """A build killed mid-way leaves torch's lock file; an old one must not
    make the next load wait forever, a fresh one (a live build) stays."""
    import os
    import torch.utils.cpp_extension as ext
    monkeypatch.setattr(ext, "_get_build_directory", lambda name, verbose: str(tmp_path))
    lock = tmp_path / "lock"
    lock.touch()
    cpu_kernel._clear_stale_lock("x")
    assert lock.exists()
    old = lock.stat().st_mtime - cpu_kernel.STALE_LOCK_S - 1
    os.utime(lock, (old, old))
    cpu_kernel._clear_stale_lock("x")
    assert not lock.exists()
    cpu_kernel._clear_stale_lock("x")      # no lock: nothing to do
