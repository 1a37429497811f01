"""GPU benchmark of the allocators on real-engine runs (run it when the
device tool lends a GPU; `--dry-run` checks it end to end on CPU).

For a 9B-class Gemma-2-shaped and a Ministral-8B-shaped random-weight model
(real widths, bf16; `--layers` trims depth to fit time and disk), a
Jamba-shaped (Mamba-1 + attention + MoE) and a Bamba-shaped (Mamba-2)
model, and the small mllama / LLaVA of bench/vlm_models.py,
it serves the same prompts through the real engine under each allocator
with the same KV budget (`jenga.bench.throughput.run_one`), on CUDA in bf16,
and writes a markdown table and JSON to `--out`.  Nothing is downloaded.

    PYTHONPATH=src python scripts/gpu_bench_families.py --out /tmp/gpu-families
    PYTHONPATH=src python scripts/gpu_bench_families.py --dry-run --out /tmp/x
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

ALLOCATORS = ("jenga", "max-page", "static", "uniform")


def hybrid_config(kind: str, dry: bool):
    import transformers as tf
    size = dict(hidden_size=128 if dry else 2048, num_hidden_layers=4 if dry else 16,
                num_attention_heads=4 if dry else 16, num_key_value_heads=2 if dry else 8,
                intermediate_size=256 if dry else 5632, vocab_size=49152, max_position_embeddings=8192,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if kind == "jamba":
        return tf.JambaConfig(**size, num_experts=4, num_experts_per_tok=2, attn_layer_period=4,
                              attn_layer_offset=2, expert_layer_period=2, expert_layer_offset=1,
                              use_mamba_kernels=False)
    return tf.BambaConfig(**size, attn_layer_indices=[1] if dry else [4, 12], mamba_n_heads=4 if dry else 32,
                          mamba_d_head=64, mamba_n_groups=1, mamba_d_state=16 if dry else 64)


def attention_config(kind: str, dry: bool, layers: int):
    """Gemma-2-9B / Ministral-8B widths (presets' sources); tiny when dry."""
    import transformers as tf
    if dry:
        size = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    intermediate_size=256)
    elif kind == "gemma2-9b":
        size = dict(hidden_size=3584, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                    intermediate_size=14336)
    else:
        size = dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                    intermediate_size=12288)
    common = dict(num_hidden_layers=layers, vocab_size=49152, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  max_position_embeddings=32768)
    if kind == "gemma2-9b":
        return tf.Gemma2Config(**size, **common, sliding_window=64 if dry else 4096)
    types = ["full_attention" if i % 4 == 3 else "sliding_attention" for i in range(layers)]
    return tf.MistralConfig(**size, **common, sliding_window=64 if dry else 8192, layer_types=types)


def models(dry: bool, work: Path, layers: int) -> dict[str, Path]:
    from jenga.bench.builtin_models import build_model_folder
    from jenga.bench.vlm_models import vlm_model_path

    out = {k: build_model_folder(attention_config(k, dry, 4 if dry else layers), work / k)
           for k in ("gemma2-9b", "ministral-8b")}
    out.update({k: build_model_folder(hybrid_config(k, dry), work / k) for k in ("jamba", "bamba")})
    out.update({k: vlm_model_path(f"{k}-small") for k in ("mllama", "llava")})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU")
    ap.add_argument("--kv-mib", type=int, default=None)
    ap.add_argument("--layers", type=int, default=12, help="depth of the Gemma-2/Ministral-shaped models")
    args = ap.parse_args()
    from jenga.bench.throughput import Result, Workload, run_one, table

    dry = args.dry_run
    device, dtype = ("cpu", "float32") if dry else ("cuda", "bfloat16")
    w = Workload(num_requests=8 if dry else 256, prompt_len=48 if dry else 1024,
                 output_len=8 if dry else 128, images=1)
    kv = (args.kv_mib or (8 if dry else 2048)) * 2**20
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report, lines = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models(dry, Path(tmp), args.layers).items():
            rows = []
            for a in ALLOCATORS:
                try:
                    rows.append(run_one(path, a, kv, w, device=device, dtype=dtype,
                                        max_num_batched_tokens=256 if dry else 8192))
                except ValueError as err:   # e.g. static's share too small for one request
                    rows.append(Result(a, 0, w.num_requests, 0.0, 0.0, 0.0, 0, 0, 0, 0.0, 0, str(err)))
            report[name] = [asdict(r) for r in rows]
            lines += [f"## {name} ({device}, {dtype})", table(name, kv, rows), ""]
            print(lines[-2], flush=True)
    (out / "gpu-families.md").write_text("\n".join(lines))
    (out / "gpu-families.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
