"""Jenga (bf16, CUDA graphs) against transformers on one GPU, at saturation.

    PYTHONPATH=src python scripts/gpu_bench_transformers.py --out OUT [--deadline 330]
    PYTHONPATH=src python scripts/gpu_bench_transformers.py --dry-run --out OUT   # CPU, tiny, seconds

Models, random weights, nothing downloaded (SmolLM2's 49,152-token vocabulary,
for its tokenizer): `llama-3.2-1b` (Llama-3.2-1B's widths and depth: 16
layers, hidden 2048, 32 query / 8 kv heads of 64, llama3 RoPE, tied
embeddings), `gemma-2-2b` (Gemma-2-2B's: 26 layers, hidden 2304, 8 / 4 heads
of 256, sliding window 4096 on every other layer, soft-capping) and `jamba`
(a Jamba-shaped hybrid: 16 layers, hidden 2048, Mamba layers with attention
every 8th, MoE on every other layer).

On each model the same prompts (random tokens, greedy, `ignore_eos`, all
submitted at once) go through, in turn and `--repeats` times interleaved:
- `jenga`: `LLM.generate`, bf16, decode CUDA graphs (the Jamba shape has
  recurrent layers and an MoE, so it runs eagerly: `graph_steps` says);
- `jenga-eager`: the same engine with `enforce_eager=True`;
- `hf-generate`: transformers `generate`, one padded batch of every prompt;
- `hf-generate-batch`: transformers `generate_batch` (continuous batching,
  paged cache of the same KV bytes as Jenga's pool).
Reported per system: median output tokens/s (and total incl. prompt), the
runs, and memory held (the system's weights and caches plus its peak during
a run, from torch.cuda memory stats).  A system that cannot run a model
(transformers' continuous batching and hybrid caches) is recorded with its
error.  `--deadline` seconds bound the whole run: later runs are skipped and
say so.  Writes OUT/gpu-bench-transformers.{json,md} after every model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

VOCAB = 49152


def model_configs(dry: bool) -> dict:
    import transformers as tf
    ids = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if dry:
        small = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                     head_dim=16, max_position_embeddings=512, **ids)
        return {"llama-3.2-1b": tf.LlamaConfig(**small, num_hidden_layers=2),
                "gemma-2-2b": tf.Gemma2Config(**small, num_hidden_layers=2, sliding_window=16,
                                              query_pre_attn_scalar=16),
                "jamba": tf.JambaConfig(**{k: v for k, v in small.items() if k != "head_dim"}, num_hidden_layers=4,
                                        num_experts=2, num_experts_per_tok=1, attn_layer_period=4,
                                        attn_layer_offset=2, expert_layer_period=2, expert_layer_offset=1)}
    return {
        "llama-3.2-1b": tf.LlamaConfig(
            hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
            num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, tie_word_embeddings=True,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, **ids),
        "gemma-2-2b": tf.Gemma2Config(
            hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
            num_key_value_heads=4, head_dim=256, sliding_window=4096, query_pre_attn_scalar=256,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, max_position_embeddings=8192, **ids),
        "jamba": tf.JambaConfig(
            hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
            num_key_value_heads=8, num_experts=8, num_experts_per_tok=2, attn_layer_period=8, attn_layer_offset=4,
            expert_layer_period=2, expert_layer_offset=1, max_position_embeddings=8192, **ids),
    }


def workload(name: str, dry: bool, args) -> tuple[int, int, int]:
    """(requests, prompt tokens, output tokens) for `name`."""
    if dry:
        return 4, 16, 4
    if name == "jamba":      # transformers' Jamba scans Mamba token by token without its CUDA kernels
        return min(args.requests, 64), min(args.prompt_len, 256), min(args.output_len, 64)
    return args.requests, args.prompt_len, args.output_len


def prompts_for(n: int, length: int, seed: int = 0) -> list[list[int]]:
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, length), generator=g).tolist()


class Memory:
    """Bytes a system holds on the GPU: what its construction allocated plus
    its peak above that during a run (zeros on CPU)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def now(self) -> int:
        import torch
        return torch.cuda.memory_allocated() if self.cuda else 0

    def start_run(self) -> int:
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self.now()

    def peak_above(self, base: int) -> int:
        import torch
        return torch.cuda.max_memory_allocated() - base if self.cuda else 0


class Jenga:
    def __init__(self, path: Path, device: str, dtype: str, kv: int, n: int, max_len: int, eager: bool) -> None:
        from jenga.engine.llm import LLM
        t = time.perf_counter()
        self.llm = LLM(str(path), device=device, dtype=dtype, kv_cache_memory=kv, max_num_seqs=n,
                       max_num_batched_tokens=8192, max_model_len=max_len, enforce_eager=eager,
                       enable_prefix_caching=False)
        self.setup_s = time.perf_counter() - t

    def run(self, prompts: list[list[int]], out_len: int) -> int:
        from jenga.sched.params import SamplingParams
        outs = self.llm.generate(prompts, SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True),
                                 use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)

    def extra(self) -> dict:
        g = self.llm.engine.runner.graphs
        return {"graph_sizes": list(g.captured) if g else [], "graph_steps": g.runs if g else 0,
                "setup_s": self.setup_s}


class HF:
    """A transformers model, timed with `generate` or (batched) `generate_batch`;
    the two systems share one loaded model."""

    _loaded: dict = {}

    def __init__(self, path: Path, device: str, dtype: str, kv: int, batched: bool) -> None:
        import torch
        from transformers import AutoModelForCausalLM
        self.torch, self.device, self.kv, self.batched = torch, device, kv, batched
        key = (str(path), device, dtype)
        if key not in HF._loaded:
            HF._loaded.clear()
            HF._loaded[key] = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
        self.model = HF._loaded[key]

    def _gen_config(self, out_len: int):
        from transformers import GenerationConfig
        return GenerationConfig(max_new_tokens=out_len, min_new_tokens=out_len, do_sample=False, eos_token_id=None,
                                pad_token_id=0)

    def _cache_config(self):
        """A paged cache of the same bytes as Jenga's pool (blocks of 16
        tokens of every layer at full-attention size)."""
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
        c = self.model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        block = c.num_hidden_layers * 16 * 2 * c.num_key_value_heads * head_dim * self.model.dtype.itemsize
        return ContinuousBatchingConfig(num_blocks=max(1, self.kv // block), page_size=16, max_batch_tokens=8192)

    def run(self, prompts: list[list[int]], out_len: int) -> int:
        torch = self.torch
        with torch.no_grad():
            if self.batched:
                out = self.model.generate_batch(inputs=prompts, generation_config=self._gen_config(out_len),
                                                continuous_batching_config=self._cache_config(), progress_bar=False)
                return sum(len(o.generated_tokens) for o in out.values())
            ids = torch.tensor(prompts, device=self.device)
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids),
                                      generation_config=self._gen_config(out_len))
            return int(out[:, ids.shape[1]:].numel())

    def extra(self) -> dict:
        return {}


def bench_model(name: str, path: Path, dry: bool, args, deadline: float) -> list[dict]:
    device, dtype = ("cpu", "float32") if dry else ("cuda", "bfloat16")
    n, plen, olen = workload(name, dry, args)
    prompts = prompts_for(n, plen)
    warm = prompts_for(2, 8, seed=1)
    mem = Memory(device == "cuda")
    kv = (args.kv_mib if not dry else 16) * 2**20
    makers = {"jenga": lambda: Jenga(path, device, dtype, kv, n, plen + olen + 16, eager=False),
              "jenga-eager": lambda: Jenga(path, device, dtype, kv, n, plen + olen + 16, eager=True),
              "hf-generate": lambda: HF(path, device, dtype, kv, batched=False),
              "hf-generate-batch": lambda: HF(path, device, dtype, kv, batched=True)}
    systems, rows = {}, {k: {"model": name, "system": k, "requests": n, "prompt_len": plen, "output_len": olen,
                             "runs": []} for k in makers}
    for k, make in makers.items():
        base = mem.now()
        try:
            systems[k] = make()
            # the second transformers system reuses the first's weights: it holds them too
            rows[k]["static_bytes"] = mem.now() - base or rows["hf-generate"].get("static_bytes", 0)
            systems[k].run(warm, 2)          # warm-up: compiles, graphs replay once
        except Exception as err:             # a system that cannot serve this model: recorded, not fatal
            systems.pop(k, None)
            rows[k]["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
    for r in range(args.repeats):
        for k, s in systems.items():
            if time.perf_counter() > deadline:
                rows[k]["skipped"] = f"deadline reached before repeat {r + 1}"
                continue
            base = mem.start_run()
            t = time.perf_counter()
            try:
                tokens = s.run(prompts, olen)
            except Exception as err:
                rows[k]["error"] = f"{type(err).__name__}: {err}"[:300]
                continue
            if device == "cuda":
                import torch
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            rows[k]["runs"].append({"seconds": dt, "output_tokens": tokens, "peak_bytes": mem.peak_above(base)})
            print(f"{name:13s} {k:18s} repeat {r + 1}: {tokens / dt:9.1f} output tok/s ({dt:.2f} s)", flush=True)
    for k, row in rows.items():
        runs = row["runs"]
        if runs:
            sec = statistics.median(x["seconds"] for x in runs)
            row["output_tok_per_s"] = runs[0]["output_tokens"] / sec
            row["total_tok_per_s"] = n * (plen + olen) / sec
            row["held_bytes"] = row.get("static_bytes", 0) + max(x["peak_bytes"] for x in runs)
        if k in systems:
            row.update(systems[k].extra())
    del systems
    HF._loaded.clear()
    if device == "cuda":
        import torch
        torch.cuda.empty_cache()
    return list(rows.values())


def table(rows: list[dict]) -> str:
    lines = ["| model | system | requests x (prompt + output) | output tok/s (median) | total tok/s | "
             "vs hf-generate | vs hf-generate-batch | memory held GiB | runs | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by = {(r["model"], r["system"]): r for r in rows}
    for r in rows:
        def ratio(other: str) -> str:
            o = by.get((r["model"], other), {})
            return f"{r['output_tok_per_s'] / o['output_tok_per_s']:.2f}x" if "output_tok_per_s" in r and \
                "output_tok_per_s" in o else "-"
        note = r.get("error") or r.get("skipped") or (
            f"graphs {r['graph_sizes'][0]}..{r['graph_sizes'][-1]}, {r['graph_steps']} graph steps"
            if r.get("graph_sizes") else ("eager" if r["system"].startswith("jenga") else ""))
        tps = f"{r['output_tok_per_s']:.1f}" if "output_tok_per_s" in r else "-"
        tot = f"{r['total_tok_per_s']:.1f}" if "total_tok_per_s" in r else "-"
        held = f"{r['held_bytes'] / 2**30:.2f}" if "held_bytes" in r else "-"
        lines.append(f"| {r['model']} | {r['system']} | {r['requests']} x ({r['prompt_len']} + {r['output_len']}) | "
                     f"{tps} | {tot} | {ratio('hf-generate')} | {ratio('hf-generate-batch')} | {held} | "
                     f"{len(r['runs'])} | {note} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry-run", action="store_true", help="tiny models on CPU, fp32, one repeat")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--kv-mib", type=int, default=4096, help="Jenga's pool and generate_batch's cache")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="llama-3.2-1b,gemma-2-2b,jamba")
    ap.add_argument("--deadline", type=float, default=330.0, help="seconds for the whole run")
    args = ap.parse_args()
    if args.dry_run:
        args.repeats = 1
    deadline = time.perf_counter() + args.deadline
    from jenga.bench.builtin_models import build_model_folder

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    configs = model_configs(args.dry_run)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if time.perf_counter() > deadline:
                print(f"{name}: skipped, deadline reached", flush=True)
                rows.append({"model": name, "system": "-", "requests": 0, "prompt_len": 0, "output_len": 0,
                             "runs": [], "skipped": "deadline reached before this model"})
                continue
            path = build_model_folder(configs[name], Path(tmp) / name, dtype="float32" if args.dry_run else "bfloat16",
                                      device="cpu" if args.dry_run else "cuda")
            rows += bench_model(name, path, args.dry_run, args, deadline)
            (out / "gpu-bench-transformers.json").write_text(json.dumps(rows, indent=1))
            (out / "gpu-bench-transformers.md").write_text(table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
