"""`jenga bench throughput --vs-transformers`: Jenga against transformers, side by side.

Three engines run the same seeded prompts (`throughput.make_prompts`;
lengths drawn from [prompt_len_min, prompt_len]) greedily to a fixed output
length (no EOS):
- Jenga: `LLM.generate`, the jenga allocator, the default attention backend;
- transformers `generate`: one left-padded batch of every prompt, SDPA
  attention where the family has it (eager otherwise), its dynamic cache;
- transformers `generate_batch`: its continuous batching with a paged cache
  of the same KV bytes (eager attention, as `throughput.run_hf`).
Each engine is built and warmed up once; then the three run in turn
`repeat` times, interleaved, so load from other processes on a shared
machine hits them alike, and each one's median run is kept.  The report
gives output tokens/s, Jenga's ratio to each, and how many requests'
greedy tokens Jenga and `generate` agree on (padding changes transformers'
float rounding, so a rare near-tie may differ).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineTiming:
    """One engine's median run: seconds, output tokens, tokens/s, and the
    seconds of every run in order."""

    engine: str
    seconds: float
    tokens: int
    runs: tuple[float, ...]

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class JengaEngine:
    name = "jenga"

    def __init__(self, model: Path, prompts: list, output_len: int, kv_bytes: int, **engine: object) -> None:
        from ..engine.llm import LLM
        from ..sched.params import SamplingParams
        self.llm = LLM(str(model), allocator="jenga", kv_cache_memory=kv_bytes, **engine)
        self.prompts = prompts
        self.params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
        self.llm.generate([prompts[0][:8]], SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))

    def run(self) -> tuple[float, list[list[int]]]:
        t0 = time.perf_counter()
        outs = self.llm.generate(self.prompts, self.params)
        return time.perf_counter() - t0, [list(o.outputs[0].token_ids) for o in outs]


def _hf_model(model: Path, attn: str):
    import torch
    from transformers import AutoModelForCausalLM
    try:
        return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation=attn)
    except (ValueError, ImportError):   # a family without that attention implementation
        return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation="eager")


def _greedy(hf, output_len: int):
    from transformers import GenerationConfig
    return GenerationConfig(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                            eos_token_id=None, pad_token_id=hf.config.pad_token_id or 0)


class HFGenerate:
    name = "transformers generate"

    def __init__(self, model: Path, prompts: list, output_len: int) -> None:
        import torch
        self.hf = _hf_model(model, "sdpa")
        self.cfg = _greedy(self.hf, output_len)
        pad, width = self.cfg.pad_token_id, max(len(p) for p in prompts)
        self.ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
        self.mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            self.hf.generate(input_ids=self.ids[:1, -8:], attention_mask=self.mask[:1, -8:],
                             generation_config=_greedy(self.hf, 2))

    def run(self) -> tuple[float, list[list[int]]]:
        import torch
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.hf.generate(input_ids=self.ids, attention_mask=self.mask, generation_config=self.cfg)
        return time.perf_counter() - t0, out[:, self.ids.shape[1]:].tolist()


class HFGenerateBatch:
    name = "transformers generate_batch"

    def __init__(self, model: Path, prompts: list, output_len: int, kv_bytes: int, max_batch_tokens: int) -> None:
        import logging

        from .throughput import hf_cache_config
        self.hf = _hf_model(model, "eager")
        self.cfg = _greedy(self.hf, output_len)
        self.cb = hf_cache_config(self.hf.config, kv_bytes, max_batch_tokens)
        self.prompts = prompts
        self.log = logging.getLogger("ContinuousBatchingLogger")
        self.log.setLevel(logging.CRITICAL)   # on CPU it logs an ERROR (no psutil) on every call
        self.hf.generate_batch(inputs=prompts[:1], generation_config=_greedy(self.hf, 2),
                               continuous_batching_config=self.cb, progress_bar=False)

    def run(self) -> tuple[float, list[list[int]]]:
        t0 = time.perf_counter()
        out = self.hf.generate_batch(inputs=self.prompts, generation_config=self.cfg,
                                     continuous_batching_config=self.cb, progress_bar=False)
        dt = time.perf_counter() - t0
        by_prompt = {tuple(o.prompt_ids): list(o.generated_tokens) for o in out.values()}
        return dt, [by_prompt.get(tuple(p), []) for p in self.prompts]


def compare(model: Path, prompts: list, output_len: int, kv_bytes: int, repeat: int, max_batch_tokens: int,
            **engine: object) -> tuple[list[EngineTiming], int]:
    """Build the three engines, run them interleaved `repeat` times; returns
    each engine's median timing and the number of requests whose greedy
    tokens Jenga and transformers `generate` agree on."""
    engines = [JengaEngine(model, prompts, output_len, kv_bytes, max_num_batched_tokens=max_batch_tokens, **engine),
               HFGenerate(model, prompts, output_len),
               HFGenerateBatch(model, prompts, output_len, kv_bytes, max_batch_tokens)]
    runs: dict[str, list[tuple[float, int]]] = {e.name: [] for e in engines}
    tokens: dict[str, list[list[int]]] = {}
    for _ in range(repeat):
        for e in engines:
            dt, toks = e.run()
            runs[e.name].append((dt, sum(len(t) for t in toks)))
            tokens[e.name] = toks
    timings = []
    for e in engines:
        dt = statistics.median(r[0] for r in runs[e.name])
        timings.append(EngineTiming(e.name, dt, runs[e.name][0][1], tuple(r[0] for r in runs[e.name])))
    agree = sum(a == b for a, b in zip(tokens["jenga"], tokens["transformers generate"]))
    return timings, agree


def report(model: str, n_prompts: int, lengths: tuple[int, int], output_len: int, threads: int,
           timings: list[EngineTiming], agree: int) -> str:
    """A markdown table of the comparison."""
    jenga = timings[0]
    lines = [f"model {model}: {n_prompts} prompts of {lengths[0]}-{lengths[1]} tokens, {output_len} output tokens, "
             f"greedy, {threads} thread(s), medians of {len(jenga.runs)} interleaved runs",
             "| engine | output tok/s | seconds (median) | runs (s) | Jenga / engine |", "|---|---|---|---|---|"]
    for t in timings:
        runs = ", ".join(f"{r:.2f}" for r in t.runs)
        lines.append(f"| {t.engine} | {t.tok_per_s:.1f} | {t.seconds:.2f} | {runs} | "
                     f"{jenga.tok_per_s / max(t.tok_per_s, 1e-9):.2f}x |")
    lines.append(f"greedy tokens equal to transformers generate on {agree} of {n_prompts} requests")
    return "\n".join(lines)
