"""Parallel sampling on CPU: memory held and throughput for n = 1, 4, 8.

For each model the script runs one prompt three ways, alternating the runs
so machine noise hits them alike:
- `n=k`: one request with `SamplingParams(n=k)` (engine/parallel_sampling.py:
  k children that share the prompt's state through the prefix cache);
- `k separate`: k independent requests of the same prompt with prefix
  caching off: what an engine pays that cannot share a prompt between
  sequences.
and reports, per run, the peak KV bytes held by requests (sampled after
every step through `LLMEngine.add_step_observer`), the prompt tokens the
model computed, the encoder runs, and output tokens per second of wall time
(median of `--repeats`).  The outputs must agree: greedy children all give
the single request's tokens (checked).

Models (random weights, fixed seeds; their text is noise, memory and
compute behave as in the real families):
- `gemma2`: the built-in Gemma-2 shape (`builtin:gemma2-small`: sliding
  window 128 on every other layer, soft-capping);
- `jamba`: a small Jamba (Mamba-1 + attention + MoE) built here;
- `mllama`: `vlm:mllama-small` (cross-attention over one 4-tile image).

    PYTHONPATH=src python scripts/bench_parallel_sampling.py --out docs/results/parallel-sampling-cpu.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from jenga.engine.config import EngineConfig
from jenga.engine.llm_engine import LLMEngine
from jenga.sched.params import SamplingParams

MODELS = ("gemma2", "jamba", "mllama")


def jamba_folder(root: Path) -> Path:
    """A small random Jamba with a byte tokenizer (built once under root)."""
    import transformers as tf
    out = root / "jamba-small"
    if (out / "config.json").exists():
        return out
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_speculative import byte_tokenizer
    cfg = tf.JambaConfig(vocab_size=258, hidden_size=128, intermediate_size=256, num_hidden_layers=8,
                         num_attention_heads=4, num_key_value_heads=2, attn_layer_period=4, attn_layer_offset=2,
                         expert_layer_period=2, expert_layer_offset=1, num_experts=4, num_experts_per_tok=2,
                         mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, max_position_embeddings=4096,
                         bos_token_id=256, eos_token_id=257, pad_token_id=0)
    torch.manual_seed(0)
    tf.JambaForCausalLM(cfg).save_pretrained(out)
    byte_tokenizer(out)
    return out


def model_case(name: str, root: Path, prompt_len: int):
    """(folder, prompt for add_request, images) for a model name."""
    g = torch.Generator().manual_seed(1)
    if name == "gemma2":
        from jenga.bench.builtin_models import builtin_model_path
        return builtin_model_path("gemma2-small"), torch.randint(10, 40000, (prompt_len,), generator=g).tolist(), None
    if name == "jamba":
        return jamba_folder(root), torch.randint(0, 256, (prompt_len,), generator=g).tolist(), None
    if name == "mllama":
        from jenga.bench.vlm_models import BOS, IMAGE, vlm_model_path
        image = torch.randint(0, 256, (3, 112, 112), dtype=torch.uint8, generator=g)
        text = torch.randint(0, 256, (prompt_len,), generator=g).tolist()
        return vlm_model_path("mllama-small"), [BOS, IMAGE] + text, [image]
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


def run(folder: Path, prompt, images, n: int, shared: bool, output_len: int, kv_bytes: int) -> dict:
    """One engine, one way of asking for n samples; its measurements."""
    e = LLMEngine(EngineConfig(model=str(folder), kv_cache_memory=kv_bytes, cpu_threads=1,
                               enable_prefix_caching=shared))
    peak, computed = [0], [0]

    def observe(ev) -> None:
        peak[0] = max(peak[0], e.manager.usage().used_bytes)
        computed[0] += sum(min(s.end, s.prompt_len) - s.start for s in ev.plan.seqs if s.start < s.prompt_len)

    e.add_step_observer(observe)
    greedy = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
    t0 = time.perf_counter()
    if shared:
        e.add_request("p", prompt, SamplingParams(**{**greedy.__dict__, "n": n}), images=images)
    else:
        for i in range(n):
            e.add_request(f"p{i}", prompt, greedy, images=images)
    outs = {}
    while e.has_unfinished_requests():
        for out in e.step():
            if out.finished:
                outs[out.request_id] = out
    dt = time.perf_counter() - t0
    tokens = sorted(c.token_ids for o in outs.values() for c in o.outputs)
    return dict(peak=peak[0], computed=computed[0], encoder_runs=e.stats().encoder_runs,
                tok_s=n * output_len / dt, tokens=tokens)


def measure(name: str, root: Path, ns: list[int], repeats: int, prompt_len: int, output_len: int,
            kv_bytes: int) -> list[dict]:
    folder, prompt, images = model_case(name, root, prompt_len)
    rows = []
    for n in ns:
        ways = {"n=k": True, "k separate": False} if n > 1 else {"n=1": True}
        runs: dict[str, list[dict]] = {w: [] for w in ways}
        for _ in range(repeats):   # interleaved
            for way, shared in ways.items():
                runs[way].append(run(folder, prompt, images, n, shared, output_len, kv_bytes))
        ref = runs[next(iter(ways))][0]["tokens"]
        for way, rs in runs.items():
            if any(r["tokens"] != ref for r in rs):
                raise AssertionError(f"{name} n={n} {way}: outputs differ from the first run's")
            rows.append(dict(model=name, n=n, way=way, peak=rs[0]["peak"], computed=rs[0]["computed"],
                             encoder_runs=rs[0]["encoder_runs"],
                             tok_s=statistics.median(r["tok_s"] for r in rs),
                             spread=(min(r["tok_s"] for r in rs), max(r["tok_s"] for r in rs))))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | n | how | peak KV held | prompt tokens computed | encoder runs | output tok/s (median; min-max) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['n']} | {r['way']} | {r['peak'] / 2**20:.2f} MiB | {r['computed']} | "
                     f"{r['encoder_runs']} | {r['tok_s']:.1f} ({r['spread'][0]:.1f}-{r['spread'][1]:.1f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--n", default="1,4,8", help="comma-separated n values")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--kv-bytes", type=int, default=64 << 20)
    ap.add_argument("--workdir", type=Path, default=None, help="where the Jamba folder is built")
    ap.add_argument("--out", type=Path, default=None, help="write the table (markdown) here too")
    a = ap.parse_args(argv)
    root = a.workdir or Path(tempfile.mkdtemp(prefix="jenga-ps-"))
    rows = []
    for name in a.models.split(","):
        rows += measure(name, root, [int(x) for x in a.n.split(",")], a.repeats, a.prompt_len, a.output_len,
                        a.kv_bytes)
    text = table(rows)
    print(text)
    print(f"load average: {os.getloadavg()}")
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
