"""ModelRunner: runs one StepPlan through a model over the KV pool.

The runner is the local executor (sched/executor.py): `execute(plan)`
applies the plan's page copies and zeros to the pool, builds the attention
metadata once per group, runs the model's forward on all scheduled tokens
of all seqs at once (prefill chunks and decodes mixed), samples the next
token of every seq whose `sample` flag is set with its Sampler, and returns
a `StepResult`.  `forward(plan, verify)` is the same step without sampling:
fp32 logits of the last token of every sampled seq (with `verify`, of its
last num_spec+1 tokens), which the speculative runner verifies itself.  A
second model sharing the plan (a speculative draft) runs with
`layer_offset`: its layer i is plan layer offset + i, and it sees the pool
and the metadata in its own layer numbers.  Images reach the runner through
`register_inputs` and leave with `plan.finished`.  The runner depends on
nothing but the StepPlan, so hand-built plans, the scheduler, or a replayed
trace drive it alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from ..memory.plan import MemoryPlan
from ..memory.policies import serves
from ..model.attn_metadata import build_attn_metadata, to_device
from ..model.cuda_graphs import CudaGraphConfig, DecodeGraphs
from ..model.families import DecoderLM
from ..model.kv_pool import KVPool
from ..model.multimodal import ImageStore
from ..model.state_metadata import build_state_metadata, check_state_plan
from ..sched.step import StepPlan, StepResult
from .sampler import Sampler


@dataclass(frozen=True)
class RunnerOutput:
    """req_ids of the seqs with `sample=True`, in plan order; logits
    [len(req_ids), vocab] fp32 for their last scheduled token (with
    `execute(verify=True)`: num_spec+1 rows per seq, its last num_spec+1
    tokens in order); duration_s: wall time of `execute`."""

    req_ids: tuple[str, ...]
    logits: torch.Tensor
    duration_s: float = 0.0
    encoder_runs: int = 0


def check_plan(model: DecoderLM, plan: MemoryPlan, layer_offset: int = 0) -> None:
    """ValueError unless every attention layer of `model` sits (as plan
    layer `layer_offset + i`) in a plan group whose spec matches its K/V
    shape and keeps every key its window/chunk reads."""
    where = {layer: g for g in plan.groups for layer in g.layers}
    for i, (heads, head_dim, window, chunk) in model.layer_kv_shapes().items():
        layer = i + layer_offset
        g = where.get(layer)
        if g is None:
            raise ValueError(f"model layer {layer} is in no group of the plan")
        s = g.spec
        if (s.num_kv_heads, s.head_size) != (heads, head_dim):
            raise ValueError(f"layer {layer}: plan group {g.gid} stores {s.num_kv_heads} kv heads x "
                             f"{s.head_size}, model has {heads} x {head_dim}")
        if not serves(s, window, chunk):
            raise ValueError(f"layer {layer} attends with window={window} chunk={chunk} but plan group "
                             f"{g.gid} ({s.describe()}) releases keys it needs")


class ModelRunner:
    """Executes StepPlans.  backend: attention backend ("auto", "portable",
    "triton"), see model.attention.paged_attention.  layer_offset: plan
    index of the model's layer 0 (non-zero for a draft model sharing the
    target's plan).  sampler: what `execute` samples with (None: only
    `forward` is usable, as for a draft model).  cuda_graphs: run decode
    steps through padded static buffers (model/cuda_graphs.py), replayed
    from CUDA graphs captured here on a CUDA pool; None runs every step
    eagerly.  Raises ValueError for a plan that does not fit the model, or
    cuda_graphs with a layer offset or a model they cannot capture."""

    def __init__(self, model: DecoderLM, kv_pool: KVPool, plan: MemoryPlan, backend: str = "auto",
                 layer_offset: int = 0, sampler: Sampler | None = None,
                 cuda_graphs: CudaGraphConfig | None = None) -> None:
        if kv_pool.plan is not plan:
            raise ValueError("kv_pool was built for a different plan")
        check_plan(model, plan, layer_offset)
        self.model, self.kv_pool, self.plan, self.backend = model, kv_pool, plan, backend
        self.device = kv_pool.device
        self.layer_offset = layer_offset
        self.plan_layers = tuple(i + layer_offset for i in model.attn_layers)
        # Mamba layers (hybrid families): conv + SSM state in one page per request
        self.state_layers = tuple(i + layer_offset for i in getattr(model, "state_layers", ()))
        if self.state_layers:
            check_state_plan({i + layer_offset: s for i, s in model.layer_state_shapes().items()}, plan)
        # the model speaks its own layer numbers; the shifted view maps them
        self._model_pool = kv_pool.with_layer_offset(layer_offset) if layer_offset else kv_pool
        # vision-language families: the engine registers each request's image inputs here
        self.images = ImageStore() if getattr(model, "accepts_images", False) else None
        self.sampler = sampler
        self.graphs = None
        if cuda_graphs is not None:
            if layer_offset:
                raise ValueError("cuda_graphs: a model at a layer offset (a draft) runs eagerly")
            self.graphs = DecodeGraphs(model, kv_pool, plan, self.plan_layers, cuda_graphs)
            if self.device.type == "cuda":
                self.graphs.capture()

    @staticmethod
    def _check_step(step: StepPlan, verify: bool, recurrent: bool, images: bool = False) -> None:
        for s in step.seqs:
            if (s.images or s.encoder_runs) and not images:
                raise ValueError(f"request {s.req_id}: images need an encoder, which these text models lack")
            if s.num_spec and not verify:
                raise ValueError(f"request {s.req_id}: speculative decoding (num_spec={s.num_spec}) "
                                 "needs execute(verify=True)")
            if s.state_saves and not recurrent:
                raise ValueError(f"request {s.req_id}: state_saves need recurrent layers, which "
                                 "these models lack")
            if not s.token_ids:
                raise ValueError(f"request {s.req_id}: a scheduled seq must compute at least one token")

    # ------------------------------------------------------- executor
    def execute(self, step: StepPlan) -> StepResult:
        """The executor contract: forward, then sample one token per
        sampled seq.  Drops the sampler's and the image store's state of
        `step.finished` first.  Raises ValueError as `forward` does, or
        when the runner has no sampler."""
        if self.sampler is None:
            raise ValueError("this ModelRunner has no sampler; use forward() for logits")
        t0 = time.perf_counter()
        self.forget(step.finished)
        out = self.forward(step)
        by_id = {s.req_id: s for s in step.seqs}
        tokens, lps = self.sampler.sample_with_logprobs(out.logits, [by_id[r] for r in out.req_ids])
        logprobs = {r: (lp,) for r, lp in zip(out.req_ids, lps) if lp is not None}
        return StepResult({r: (t,) for r, t in zip(out.req_ids, tokens)}, time.perf_counter() - t0,
                          out.encoder_runs, logprobs=logprobs)

    def register_inputs(self, req_id: str, inputs) -> None:
        """Register a request's preprocessed images (model.multimodal.ImageInput);
        ValueError when the model takes no images."""
        if self.images is None:
            if inputs:
                raise ValueError(f"request {req_id}: {type(self.model).__name__} does not take images")
            return
        self.images.add(req_id, inputs)

    def forget(self, req_ids) -> None:
        """Drop the per-request state (sampler generators, images) of ended requests."""
        if req_ids:
            if self.sampler is not None:
                self.sampler.drop(req_ids)
            if self.images is not None:
                self.images.drop(req_ids)

    def close(self) -> None:
        """Nothing to release for a local runner (the pool goes with it)."""

    def forward(self, step: StepPlan, verify: bool = False) -> RunnerOutput:
        """Apply copies and zeros, run the forward, return the sampled seqs'
        logits (with `verify`, those of each sampled seq's last num_spec+1
        tokens); mutates the pool.  Raises ValueError on what the models
        cannot run (images, state saves, draft tokens without `verify`) or
        on page tables missing a page the step needs."""
        t0 = time.perf_counter()
        self._check_step(step, verify, bool(self.state_layers), self.images is not None)
        self.kv_pool.apply_copies(step.copies)
        self.kv_pool.apply_zeros(step.zeros)
        sampled = [i for i, s in enumerate(step.seqs) if s.sample]
        req_ids = tuple(step.seqs[i].req_id for i in sampled)
        if not step.seqs:
            return RunnerOutput(req_ids, torch.empty(0, self.model.arch.vocab_size), time.perf_counter() - t0)
        if self.graphs is not None and not verify:
            logits = self.graphs.run(step)   # None unless a decode step the graphs hold
            if logits is not None:
                if len(sampled) < len(step.seqs):
                    logits = logits[to_device(torch.tensor(sampled), self.device)]
                return RunnerOutput(req_ids, logits.float(), time.perf_counter() - t0)
        meta = build_attn_metadata(step, self.plan, self.plan_layers, self.device, self.backend)
        if self.layer_offset:
            off = self.layer_offset
            meta = replace(meta, layer_group={k - off: g for k, g in meta.layer_group.items() if k >= off})
        extra = {}
        if self.state_layers:
            states = build_state_metadata(step, self.plan, self.state_layers, self.device)
            off = self.layer_offset
            extra["state_metadata"] = replace(states, layer_group={k - off: g for k, g in states.layer_group.items()})
        ids = to_device(torch.tensor([t for s in step.seqs for t in s.token_ids], dtype=torch.long), self.device)
        ends = [0]
        for s in step.seqs:
            ends.append(ends[-1] + s.num_tokens)
        last = [range(ends[i + 1] - 1 - (step.seqs[i].num_spec if verify else 0), ends[i + 1]) for i in sampled]
        rows = to_device(torch.tensor([r for rs in last for r in rs], dtype=torch.long), self.device)
        runs = 0
        with torch.no_grad():
            if self.images is not None:   # encoder runs write the cross / vision pages first
                mm, runs = self.model.prepare_images(step, self.plan, self._model_pool, self.images)
                extra.update(mm)
            logits = self.model(ids, meta.positions, meta, self._model_pool, rows, **extra)
        return RunnerOutput(req_ids, logits.float(), time.perf_counter() - t0, runs)
