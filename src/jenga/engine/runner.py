"""ModelRunner: runs one StepPlan through a model over the KV pool.

The runner is the torch side of the step boundary: it applies the plan's
page copies and zeros to the pool, builds the attention metadata once per
group, runs the model's forward on all scheduled tokens of all seqs at once
(prefill chunks and decodes mixed), and returns fp32 logits of the last
token of every seq whose `sample` flag is set.  Sampling is the sampler's
job (engine/sampler.py).  The runner depends on nothing but the StepPlan, so
hand-built plans, the scheduler, or a replayed trace drive it alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..memory.plan import MemoryPlan
from ..model.attn_metadata import build_attn_metadata, scope_within
from ..model.families import DecoderLM
from ..model.kv_pool import KVPool
from ..sched.step import StepPlan


@dataclass(frozen=True)
class RunnerOutput:
    """req_ids of the seqs with `sample=True`, in plan order; logits
    [len(req_ids), vocab] fp32 for their last scheduled token; duration_s:
    wall time of `execute`."""

    req_ids: tuple[str, ...]
    logits: torch.Tensor
    duration_s: float = 0.0


def check_plan(model: DecoderLM, plan: MemoryPlan) -> None:
    """ValueError unless every attention layer of `model` sits in a plan
    group whose spec matches its K/V shape and keeps every key its
    window/chunk reads."""
    where = {layer: g for g in plan.groups for layer in g.layers}
    for layer, (heads, head_dim, window, chunk) in model.layer_kv_shapes().items():
        g = where.get(layer)
        if g is None:
            raise ValueError(f"model layer {layer} is in no group of the plan")
        s = g.spec
        if (s.num_kv_heads, s.head_size) != (heads, head_dim):
            raise ValueError(f"layer {layer}: plan group {g.gid} stores {s.num_kv_heads} kv heads x "
                             f"{s.head_size}, model has {heads} x {head_dim}")
        if not scope_within(window, chunk, s.window, s.chunk):
            raise ValueError(f"layer {layer} attends with window={window} chunk={chunk} but plan group "
                             f"{g.gid} ({s.describe()}) releases keys it needs")


class ModelRunner:
    """Executes StepPlans.  backend: attention backend ("auto", "portable",
    "triton"), see model.attention.paged_attention."""

    def __init__(self, model: DecoderLM, kv_pool: KVPool, plan: MemoryPlan, backend: str = "auto") -> None:
        if kv_pool.plan is not plan:
            raise ValueError("kv_pool was built for a different plan")
        check_plan(model, plan)
        self.model, self.kv_pool, self.plan, self.backend = model, kv_pool, plan, backend
        self.device = kv_pool.device

    @staticmethod
    def _check_step(step: StepPlan) -> None:
        for s in step.seqs:
            if s.images or s.encoder_runs:
                raise ValueError(f"request {s.req_id}: images need an encoder, which these text models lack")
            if s.num_spec:
                raise ValueError(f"request {s.req_id}: speculative decoding (num_spec={s.num_spec}) "
                                 "is not supported by ModelRunner")
            if s.state_saves:
                raise ValueError(f"request {s.req_id}: state_saves need recurrent layers, which "
                                 "these models lack")
            if not s.token_ids:
                raise ValueError(f"request {s.req_id}: a scheduled seq must compute at least one token")

    def execute(self, step: StepPlan) -> RunnerOutput:
        """Apply copies and zeros, run the forward, return the sampled seqs'
        logits; mutates the pool.  Raises ValueError on what the models
        cannot run (images, speculative tokens, state saves) or on page
        tables missing a page the step needs."""
        t0 = time.perf_counter()
        self._check_step(step)
        self.kv_pool.apply_copies(step.copies)
        self.kv_pool.apply_zeros(step.zeros)
        sampled = [i for i, s in enumerate(step.seqs) if s.sample]
        req_ids = tuple(step.seqs[i].req_id for i in sampled)
        if step.empty:
            return RunnerOutput(req_ids, torch.empty(0, self.model.arch.vocab_size), time.perf_counter() - t0)
        meta = build_attn_metadata(step, self.plan, self.model.attn_layers, self.device, self.backend)
        ids = torch.tensor([t for s in step.seqs for t in s.token_ids], dtype=torch.long).to(self.device)
        ends = [0]
        for s in step.seqs:
            ends.append(ends[-1] + s.num_tokens)
        rows = torch.tensor([ends[i + 1] - 1 for i in sampled], dtype=torch.long).to(self.device)
        with torch.no_grad():
            logits = self.model(ids, meta.positions, meta, self.kv_pool, rows)
        return RunnerOutput(req_ids, logits.float(), time.perf_counter() - t0)
