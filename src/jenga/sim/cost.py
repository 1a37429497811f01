"""The roofline step-time model: what one StepPlan costs on a GPU.

A step's time is `max(compute, memory) + communication + overhead`, where
compute is its FLOPs at `mfu` of the GPU's peak and memory is the bytes it
moves at `bandwidth_efficiency` of HBM bandwidth (`CostParams`, justified
in docs/cost-model.md).  Under tensor parallelism (`tp` GPUs) each GPU does
1/tp of the FLOPs and reads 1/tp of the weights, moves the state *its rank*
holds (`ModelShape.per_rank`: KV heads replicated when tp exceeds them, as
the engine stores them), and every decoder layer costs two all-reduces of
the step's hidden states (after attention and after the MLP, Megatron-style)
over the GPU's interconnect; they are on the critical path, not overlapped.  FLOPs: 2 per active parameter per token, plus
attention (4 x q_dim per query-key pair), plus the vision encoder for each
encoder run.  Bytes: the weights once, plus for every layer of the model
the state its kernel reads (the keys in its attention span, a Mamba state,
the image embeddings a chunk consumes) and writes (the new tokens' KV,
encoder outputs, checkpoints, page copies).

The work is derived from the model's *true* layer specs and each sequence's
token range, not from the pages an allocator holds: a kernel reads the keys
its attention span covers whatever the page size, and never reads padding.
So a batch costs the same under every allocator, and throughput differences
come only from how many requests memory lets into the batch.  `MemoryPlan`
is used for what is page-shaped by nature: page copies, zeroed pages and
recurrent-state checkpoints.  What a layer of each kind computes and moves
is its policy's `step_work` (memory/policies), the same class that decides
what the kind keeps.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from ..memory.plan import MemoryPlan
from ..memory.policies import policy_for
from ..memory.spec import ModelShape, dtype_bytes
from ..sched.step import StepPlan
from .gpus import GPUSpec


@dataclass(frozen=True)
class CostParams:
    """Efficiency factors of the roofline model (see docs/cost-model.md).

    mfu: fraction of peak FLOP/s reached by compute-bound steps.
    bandwidth_efficiency: fraction of HBM bandwidth reached by memory-bound steps.
    step_overhead_s: fixed time per step (scheduling, launches, sampling).
    seq_overhead_s: extra time per sequence in the step (per-request CPU work).
    vision_params: parameters of the vision encoder; an encoder run costs
        2 x vision_params FLOPs per image token.
    state_bandwidth_efficiency: fraction of HBM bandwidth the attention /
        state kernels reach when reading and writing KV and states (None:
        same as bandwidth_efficiency).
    layer_overhead_s: fixed time per model layer per step (kernel launches
        when a step is not captured in a CUDA graph).
    graph_decode: decode-only steps replay a captured CUDA graph and pay no
        layer_overhead_s (vLLM v0 without --enforce-eager: prefills run
        eagerly, decode batches from graphs).
    allreduce_efficiency: fraction of the interconnect bandwidth a ring
        all-reduce reaches (tensor parallelism only).
    allreduce_latency_s: fixed time of one all-reduce (launch and the
        ring's hops; small messages are latency-bound).
    """

    mfu: float = 0.6
    bandwidth_efficiency: float = 0.8
    step_overhead_s: float = 0.003
    seq_overhead_s: float = 20e-6
    vision_params: float = 0.6e9
    state_bandwidth_efficiency: float | None = None
    layer_overhead_s: float = 0.0
    graph_decode: bool = False
    allreduce_efficiency: float = 0.8
    allreduce_latency_s: float = 10e-6

    @classmethod
    def vllm_v0(cls, eager: bool = True) -> "CostParams":
        """vLLM v0.6.3 as the artifact ran it: `vllm_v0_eager()`, and with
        `eager=False` (no --enforce-eager) decode-only steps from CUDA graphs."""
        base = cls.vllm_v0_eager()
        return base if eager else replace(base, graph_decode=True)

    @classmethod
    def vllm_v0_eager(cls) -> "CostParams":
        """The engine the paper measured: vLLM v0.6.3 run eagerly (the
        artifact passes --enforce-eager; encoder-decoder models could not use
        CUDA graphs in v0).  Every layer's ~20 kernels launch from Python
        each step (~0.5 ms a layer), the v0 scheduler and input preparation
        cost ~10 ms a step, and its paged-attention kernel reads long
        contexts at about a third of HBM bandwidth.  Chosen once from those
        public characteristics; never fitted per model (docs/cost-model.md)."""
        return cls(mfu=0.5, bandwidth_efficiency=0.8, step_overhead_s=0.010, seq_overhead_s=50e-6,
                   state_bandwidth_efficiency=0.35, layer_overhead_s=0.0005)

    def __post_init__(self) -> None:
        for name in ("mfu", "bandwidth_efficiency", "allreduce_efficiency"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        if self.state_bandwidth_efficiency is not None and not 0.0 < self.state_bandwidth_efficiency <= 1.0:
            raise ValueError(f"state_bandwidth_efficiency must be in (0, 1], got {self.state_bandwidth_efficiency!r}")
        for name in ("step_overhead_s", "seq_overhead_s", "vision_params", "layer_overhead_s",
                     "allreduce_latency_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class StepCost:
    """The cost of one step, with its parts.  Under tensor parallelism the
    times are one GPU's; FLOPs and weight bytes are model-wide, state bytes
    are one rank's (what its pool holds).  comm_s: the all-reduces."""

    linear_flops: float
    attention_flops: float
    encoder_flops: float
    weight_bytes: float
    state_read_bytes: float
    state_write_bytes: float
    compute_s: float
    memory_s: float
    overhead_s: float
    comm_s: float = 0.0

    @property
    def flops(self) -> float:
        return self.linear_flops + self.attention_flops + self.encoder_flops

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.state_read_bytes + self.state_write_bytes

    @property
    def duration_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.comm_s + self.overhead_s

    @property
    def bound(self) -> str:
        """"compute" or "memory": which roof sets the step's time."""
        return "compute" if self.compute_s >= self.memory_s else "memory"


class CostModel:
    """Costs StepPlans of one model under one MemoryPlan on `tp` GPUs.

    Attention FLOPs assume q_dim = shape.hidden_size (heads x head_size
    equals the hidden size in Llama, Mistral, Qwen and mllama; Gemma's is
    5-15% wider), falling back to kv_heads x head_size (no GQA) when the
    shape has no hidden size.  `plan` is one rank's plan (built from
    `shape.per_rank(tp)`), as the engine's.  Raises ValueError naming a bad
    argument, or a tp > 1 on a GPU without an interconnect figure or for a
    shape without a hidden size.
    """

    def __init__(self, shape: ModelShape, plan: MemoryPlan, gpu: GPUSpec,
                 params: CostParams = CostParams(), tp: int = 1) -> None:
        if not isinstance(tp, int) or tp < 1:
            raise ValueError(f"tp must be a positive integer, got {tp!r}")
        if tp > 1 and not gpu.interconnect_bandwidth:
            raise ValueError(f"tp={tp}: gpu {gpu.name} has no interconnect_bandwidth to charge all-reduces by")
        if tp > 1 and not shape.hidden_size:
            raise ValueError(f"tp={tp}: model {shape.name!r} has no hidden_size to size its all-reduces")
        self.shape, self.plan, self.gpu, self.params, self.tp = shape, plan, gpu, params, tp
        # equal layers cost the same: one kernel evaluation per distinct spec; the
        # state a kernel moves is what one rank holds (per_rank), its FLOPs are model-wide
        wide = tuple(Counter(shape.layers).items())
        self.specs = tuple((spec.per_rank(tp), n) for spec, n in wide)
        # what a layer's kernel computes and moves is its kind's: the policy says
        self.kernels = tuple(policy_for(spec.kind).step_work for spec, _ in self.specs)
        self.q_dims = tuple(shape.hidden_size or spec.num_kv_heads * spec.head_size for spec, _ in wide)
        self.act_bytes = dtype_bytes(shape.layers[0].dtype)
        self.page_bytes = tuple(g.small_page_bytes for g in plan.groups)
        self.num_layers = sum(1 for spec in shape.layers if policy_for(spec.kind).decoder_layer)

    def step(self, plan: StepPlan) -> StepCost:
        """The cost of `plan` (see module doc); a plan without seqs costs only
        its page copies and zeros."""
        if not plan.seqs:   # page copies and zeros at most: no forward, no weights read
            moved = sum(self.page_bytes[c.gid] for c in plan.copies)
            zeroed = sum(self.page_bytes[gid] for gid, _ in plan.zeros)
            bw = self.gpu.hbm_bandwidth * (self.params.state_bandwidth_efficiency
                                           or self.params.bandwidth_efficiency)
            return StepCost(0, 0, 0, 0, moved, moved + zeroed, 0.0, (2 * moved + zeroed) / bw, 0.0)
        pairs_flops = 0
        read = write = 0
        enc_tokens = 0
        for seq in plan.seqs:
            s, e, images, runs = seq.start, seq.end, seq.images, seq.encoder_runs
            for (spec, count), kernel, q_dim in zip(self.specs, self.kernels, self.q_dims):
                pairs, r, w = kernel(spec, s, e, images, runs)
                pairs_flops += 4 * q_dim * pairs * count
                read += r * count
                write += w * count
            if seq.encoder_runs:
                enc_tokens += sum(seq.images[k].num_tokens for k in seq.encoder_runs)
            for save in seq.state_saves:
                write += self.page_bytes[save.gid]
        for copy in plan.copies:
            read += self.page_bytes[copy.gid]
            write += self.page_bytes[copy.gid]
        for gid, _page in plan.zeros:
            write += self.page_bytes[gid]
        graphed = self.params.graph_decode and plan.num_tokens == len(plan.seqs)
        return self._finish(2.0 * self.shape.active_params * plan.num_tokens, float(pairs_flops),
                            2.0 * self.params.vision_params * enc_tokens, read, write, len(plan.seqs), graphed,
                            self.allreduce_s(plan.num_tokens))

    def allreduce_s(self, num_tokens: int) -> float:
        """Time of one step's all-reduces on one GPU: two per decoder layer,
        each a ring over tp GPUs sending 2 (tp - 1) / tp of the
        [num_tokens, hidden] activations; 0 without tensor parallelism."""
        if self.tp == 1:
            return 0.0
        p, tp = self.params, self.tp
        sent = 2 * (tp - 1) / tp * num_tokens * self.shape.hidden_size * self.act_bytes
        one = p.allreduce_latency_s + sent / (self.gpu.interconnect_bandwidth * p.allreduce_efficiency)
        return 2 * self.num_layers * one

    def _finish(self, linear: float, attention: float, encoder: float, read: int, write: int,
                num_seqs: int, graphed: bool = False, comm_s: float = 0.0) -> StepCost:
        p, g, tp = self.params, self.gpu, self.tp
        weights = float(self.shape.weights_bytes)
        compute_s = (linear + attention + encoder) / (tp * g.peak_flops * p.mfu)
        state_eff = p.state_bandwidth_efficiency or p.bandwidth_efficiency
        memory_s = (weights / (tp * g.hbm_bandwidth * p.bandwidth_efficiency)
                    + (read + write) / (g.hbm_bandwidth * state_eff))   # read/write: one rank's state
        layers_s = 0.0 if graphed else p.layer_overhead_s * self.num_layers
        overhead = p.step_overhead_s + p.seq_overhead_s * num_seqs + layers_s
        return StepCost(linear, attention, encoder, weights, float(read), float(write),
                        compute_s, memory_s, overhead, comm_s)
