"""fp8 K/V against the unquantised engine: greedy token agreement and logit error.

For each model, the same prompts run greedily through two engines that
differ only in `kv_cache_dtype` (the compute dtype, fp32 on CPU, against
each fp8 format), and the script reports:
- token agreement: the fraction of output positions before the first
  token that differs (1.0: every sequence identical);
- identical sequences: how many of the prompts gave exactly the same tokens;
- logit error: the largest |logit difference| of each prompt's last prompt
  token (both engines prefilling it the same way), over the largest |logit|;
- KV capacity: tokens the same pool holds (fp8 holds 4x fp32, 2x bf16).

Models: the bundled SmolLM2-135M-Instruct (real weights: the meaningful
row; chat prompts through its template) and the built-in random-weight
Gemma-2 and Ministral shapes (random weights have near-tied logits, so
their agreement is a worst case).

    PYTHONPATH=src python scripts/fp8_kv_agreement.py --out docs/results/fp8-kv-cpu.md
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from jenga.engine.llm import LLM
from jenga.sched.params import SamplingParams
from jenga.sched.step import SeqStep, StepPlan

QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.",
             "Explain what a hash table is in two sentences.", "Write a haiku about the sea.",
             "What is 17 times 23?", "Give me a tip for learning a new language.",
             "Why is the sky blue?", "List four animals that live in the ocean."]


def prompts_for(llm: LLM, name: str) -> list[list[int]]:
    tok = llm.get_tokenizer()
    if name == "smollm2":
        return [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True),
                           add_special_tokens=False) for q in QUESTIONS]
    g = torch.Generator().manual_seed(0)
    return [torch.randint(10, 40000, (64 + 16 * i,), generator=g).tolist() for i in range(len(QUESTIONS))]


def last_logits(llm: LLM, prompt: list[int]) -> torch.Tensor:
    e = llm.engine
    pages = -(-len(prompt) // min(g.page_tokens for g in e.plan.groups))
    table = tuple(tuple(range(pages)) for _ in e.plan.groups)
    seq = SeqStep("probe", tuple(prompt), 0, table, True, SamplingParams(), len(prompt))
    return e.runner.forward(StepPlan(0, (seq,))).logits[0]


def measure(name: str, folder: str | None, dtypes: list[str], max_tokens: int) -> list[dict]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    ref = LLM(folder, kv_cache_memory=64 << 20, cpu_threads=1)
    prompts = prompts_for(ref, name)
    ref_out = [o.outputs[0].token_ids for o in ref.generate(prompts, params)]
    ref_logits = [last_logits(ref, p) for p in prompts]
    rows = []
    for dt in dtypes:
        llm = LLM(folder, kv_cache_memory=64 << 20, cpu_threads=1, kv_cache_dtype=dt)
        out = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
        agree = sum(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a)) for a, b in zip(ref_out, out))
        errs = [float((r - last_logits(llm, p)).abs().max() / r.abs().max()) for r, p in zip(ref_logits, prompts)]
        rows.append(dict(model=name, dtype=dt, agreement=agree / sum(len(a) for a in ref_out),
                         identical=sum(a == b for a, b in zip(ref_out, out)), n=len(prompts),
                         max_logit_err=max(errs), mean_logit_err=sum(errs) / len(errs),
                         capacity=llm.engine.plan.num_small_pages(0) / ref.engine.plan.num_small_pages(0)))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2,gemma2-small,ministral-small")
    ap.add_argument("--dtypes", default="fp8_e4m3,fp8_e5m2")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    from jenga.bench.builtin_models import builtin_model_path
    rows = []
    for name in a.models.split(","):
        folder = None if name == "smollm2" else str(builtin_model_path(name))
        rows += measure(name, folder, a.dtypes.split(","), a.max_tokens)
    lines = ["| model | KV dtype | token agreement | identical sequences | logit error max (mean) | pages vs fp32 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['dtype']} | {100 * r['agreement']:.1f}% | {r['identical']}/{r['n']} | "
                     f"{100 * r['max_logit_err']:.2f}% ({100 * r['mean_logit_err']:.2f}%) | {r['capacity']:.0f}x |")
    text = "\n".join(lines)
    print(text)
    print(f"load average: {os.getloadavg()}")
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
