"""Speculative decoding on CPU: acceptance rate and speed-up, side by side.

For one target model the script runs the same prompts (greedy, fixed
output length) through an LLMEngine without speculation and with a draft
model for each k, alternating the runs so machine noise hits all of them
alike, and reports output tokens per second (median of the repeats) of
this process's CPU time (one torch thread: robust when other jobs share
the machine) and of wall time, the speed-ups over the plain engine, the
acceptance rate (scheduler.stats), steps per run, and whether the outputs
equal the plain engine's.

Where the draft comes from (say it when quoting numbers):
- `--pair tiny` (default): a random-weight Llama target (`--layers`,
  `--hidden`) whose layers after the first have their residual outputs
  (o_proj, down_proj) scaled by `--damp`; the draft is the target's
  embeddings, layer 0, final norm and head.  Random weights give no useful
  language, so acceptance is set by construction: damp 0 makes the target
  equal the draft (acceptance 1), larger damps make later layers matter.
- `--target DIR --keep 0,1,2,...`: a real Llama-family folder (e.g. the
  bundled SmolLM2-135M) and a layer-skipping draft cut from it (those
  layers, plus embeddings, norm and head; no training).  `--draft DIR` uses
  a ready draft folder instead.  Prompts are then English sentences
  (TEXTS) in the target's tokenizer; with --pair tiny, random token ids.

    PYTHONPATH=src python scripts/bench_speculative.py --k 1 3 5 --concurrency 1 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from jenga.engine.config import EngineConfig
from jenga.engine.llm_engine import LLMEngine
from jenga.sched.params import SamplingParams


def byte_tokenizer(path: Path) -> None:
    """One token per byte plus <s> (256) and </s> (257, eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "bos_token": "<s>"}))


def tiny_target(path: Path, layers: int, hidden: int, damp: float, seed: int) -> None:
    """A random Llama (fp32, byte vocabulary) with layers 1.. damped."""
    import transformers as tf
    cfg = tf.LlamaConfig(vocab_size=258, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=hidden // 32, num_key_value_heads=2,
                         head_dim=32, max_position_embeddings=2048, eos_token_id=257, bos_token_id=256,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)        # decisive logits: fp32 rounding never flips an argmax
        for layer in model.model.layers[1:]:
            layer.self_attn.o_proj.weight.mul_(damp)
            layer.mlp.down_proj.weight.mul_(damp)
    model.save_pretrained(path)
    byte_tokenizer(path)


def layer_skip_draft(src: Path, dst: Path, keep: list[int]) -> None:
    """A draft folder holding layers `keep` of the Llama-family folder
    `src` (renumbered 0..), its embeddings, final norm and head, and its
    tokenizer files."""
    from safetensors.torch import load_file, save_file
    from jenga.model.loader import weight_files
    cfg = json.loads((src / "config.json").read_text())
    if not keep or max(keep) >= cfg["num_hidden_layers"]:
        raise ValueError(f"keep must name layers of the {cfg['num_hidden_layers']}-layer target, got {keep}")
    new = {str(i): j for j, i in enumerate(keep)}
    out = {}
    for f in weight_files(src):
        for name, t in load_file(str(f)).items():
            parts = name.split(".")
            if parts[:2] == ["model", "layers"]:
                if parts[2] not in new:
                    continue
                parts[2] = str(new[parts[2]])
            out[".".join(parts)] = t.contiguous()
    dst.mkdir(parents=True, exist_ok=True)
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg["num_hidden_layers"] = len(keep)
    if cfg.get("layer_types"):
        cfg["layer_types"] = [cfg["layer_types"][i] for i in keep]
    (dst / "config.json").write_text(json.dumps(cfg))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


TEXTS = [
    "The history of the printing press begins in the fifteenth century, when",
    "To make a simple tomato sauce, first heat a little olive oil in a pan and",
    "Photosynthesis is the process by which green plants use sunlight to",
    "The train left the station at dawn, and for the first hour the passengers",
    "In mathematics, a prime number is a natural number greater than one that",
    "The museum's new exhibition brings together paintings from three centuries,",
    "When learning a new programming language, the most useful first step is",
    "The river rises in the mountains to the north and flows for several hundred miles",
]


def make_prompts(eng: LLMEngine, text: bool, batch: int, prompt_len: int, vocab: int,
                 gen: torch.Generator) -> list[list[int]]:
    """English sentences (with a real tokenizer) or random token ids."""
    if text:
        return [eng.tokenizer.encode(TEXTS[i % len(TEXTS)]) for i in range(batch)]
    return [torch.randint(0, vocab, (prompt_len,), generator=gen).tolist() for _ in range(batch)]


def run_once(eng: LLMEngine, prompts: list[list[int]], max_tokens: int, tag: str) -> tuple[float, float, list, int]:
    """(wall seconds, CPU seconds of this process, outputs, output tokens)
    for the prompts run together."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(prompts):
        eng.add_request(f"{tag}-{i}", p, params)
    outs, t0, c0 = {}, time.perf_counter(), time.process_time()
    while eng.has_unfinished_requests():
        for o in eng.step():
            if o.finished:
                outs[o.request_id] = list(o.outputs[0].token_ids)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    ordered = [outs[f"{tag}-{i}"] for i in range(len(prompts))]
    return dt, cpu, ordered, sum(len(o) for o in ordered)


def bench(target: Path, draft: Path, ks: list[int], concurrency: list[int], num_prompts: int, prompt_len: int,
          max_tokens: int, repeat: int, vocab: int, seed: int, text: bool = False) -> list[dict]:
    """Rows per (concurrency, k): all prompts queued at once, at most
    `concurrency` running (max_num_seqs); k = 0 is the plain engine."""
    rows, prompts = [], None
    for conc in concurrency:
        common = dict(model=str(target), device="cpu", cpu_threads=1, kv_cache_memory=256 << 20, page_tokens=16,
                      enable_prefix_caching=False, max_num_seqs=conc)
        engines = {0: LLMEngine(EngineConfig(**common))}
        for k in ks:
            engines[k] = LLMEngine(EngineConfig(**common, speculative_model=str(draft), num_speculative_tokens=k))
        if prompts is None:
            prompts = make_prompts(engines[0], text, num_prompts, prompt_len, vocab,
                                   torch.Generator().manual_seed(seed))
        for eng in engines.values():          # warm-up: first calls allocate buffers
            run_once(eng, prompts[:1], 4, "warm")
        wall, cpu = {k: [] for k in engines}, {k: [] for k in engines}
        before = {k: (e.stats().draft_tokens, e.stats().accepted_tokens, e.stats().num_steps)
                  for k, e in engines.items()}
        outputs = {}
        for r in range(repeat):               # alternate the engines: noise hits all alike
            for k, eng in engines.items():
                dt, ct, outs, n = run_once(eng, prompts, max_tokens, f"c{conc}r{r}")
                wall[k].append(n / dt)
                cpu[k].append(n / ct)
                outputs[k] = outs
        for k, eng in engines.items():
            st = eng.stats()
            drafted, accepted, steps = (st.draft_tokens - before[k][0], st.accepted_tokens - before[k][1],
                                        st.num_steps - before[k][2])
            med = {name: statistics.median(v[k]) for name, v in (("wall", wall), ("cpu", cpu))}
            rows.append(dict(concurrency=conc, k=k, tokens_per_cpu_s=med["cpu"], tokens_per_s=med["wall"],
                             speedup=med["cpu"] / statistics.median(cpu[0]),
                             wall_speedup=med["wall"] / statistics.median(wall[0]),
                             acceptance=accepted / drafted if drafted else None,
                             steps_per_run=steps / repeat, same_output=outputs[k] == outputs[0]))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| concurrency | k | tokens/CPU-s | speed-up | tokens/s (wall) | wall speed-up | acceptance "
             "| steps/run | same output |", "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.2f}"
        lines.append(f"| {r['concurrency']} | {r['k'] or 'off'} | {r['tokens_per_cpu_s']:.1f} | {r['speedup']:.2f}x "
                     f"| {r['tokens_per_s']:.1f} | {r['wall_speedup']:.2f}x | {acc} | {r['steps_per_run']:.0f} "
                     f"| {'yes' if r['same_output'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", choices=["tiny"], default="tiny", help="build a random target + layer-0 draft")
    ap.add_argument("--target", type=Path, help="a Llama-family HF folder instead of --pair")
    ap.add_argument("--draft", type=Path, help="a ready draft folder (else cut from --target with --keep)")
    ap.add_argument("--keep", default="0", help="target layers the cut draft keeps, e.g. 0,1,2")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--damp", type=float, nargs="+", default=[0.5])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="max_num_seqs values")
    ap.add_argument("--num-prompts", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args(argv)
    keep = [int(x) for x in a.keep.split(",")]
    all_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        setups = []
        if a.target is not None:
            draft = a.draft
            if draft is None:
                draft = tmp / "draft"
                layer_skip_draft(a.target, draft, keep)
            vocab = json.loads((a.target / "config.json").read_text())["vocab_size"]
            setups.append((f"target {a.target.name}, draft {draft.name if a.draft else f'layers {keep}'}",
                           a.target, draft, vocab))
        else:
            for damp in a.damp:
                t, d = tmp / f"target-{damp}", tmp / f"draft-{damp}"
                tiny_target(t, a.layers, a.hidden, damp, a.seed)
                layer_skip_draft(t, d, keep)
                setups.append((f"tiny random target ({a.layers} layers, hidden {a.hidden}, layers 1.. damped "
                               f"x{damp}), draft = its layers {keep}", t, d, 256))
        for label, target, draft, vocab in setups:
            rows = bench(target, draft, a.k, a.concurrency, a.num_prompts, a.prompt_len, a.max_tokens, a.repeat,
                         vocab, a.seed, text=a.target is not None)
            print(f"\n{label}\n\n{table(rows)}", flush=True)
            all_rows += [dict(r, setup=label) for r in rows]
    if a.json:
        a.json.write_text(json.dumps(all_rows, indent=1))
    return 0 if all(r["same_output"] for r in all_rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
