"""GPU datasheet numbers the roofline cost model needs.

A `GPUSpec` is what one accelerator offers: memory to hold weights and KV,
peak dense bf16 matmul throughput, HBM bandwidth, and the bandwidth one
GPU's all-reduce traffic moves at between GPUs of one node
(`interconnect_bandwidth`, one direction; 0 for a GPU sold without a
multi-GPU link figure).  Numbers are the
vendors' datasheet values (dense, no sparsity); the cost model's efficiency
factors (`CostParams`) turn them into achievable rates.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPUSpec:
    """One GPU: `memory_bytes` of HBM (as sold, 1 GB = 1e9 B), `peak_flops`
    dense bf16 FLOP/s, `hbm_bandwidth` bytes/s.  Raises ValueError naming a
    field that is not positive."""

    name: str
    memory_bytes: int
    peak_flops: float
    hbm_bandwidth: float
    interconnect_bandwidth: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must be non-empty")
        for field in ("memory_bytes", "peak_flops", "hbm_bandwidth"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0, got {getattr(self, field)!r}")
        if not self.interconnect_bandwidth >= 0:
            raise ValueError(f"interconnect_bandwidth must be >= 0, got {self.interconnect_bandwidth!r}")


# Datasheets: NVIDIA H100 SXM5 80GB (989.4 TFLOP/s dense bf16, 3.35 TB/s),
# H200 SXM 141GB (same compute as H100, 4.8 TB/s), L4 24GB (121 TFLOP/s dense
# bf16, 300 GB/s).  Interconnect: NVLink 4 on H100 / H200 SXM is 900 GB/s
# both directions together, 450 GB/s each way; L4 has no NVLink, PCIe 4.0
# x16 gives 32 GB/s each way.
GPUS: dict[str, GPUSpec] = {
    "h100": GPUSpec("H100", 80_000_000_000, 989e12, 3.35e12, 450e9),
    "h200": GPUSpec("H200", 141_000_000_000, 989e12, 4.8e12, 450e9),
    "l4": GPUSpec("L4", 24_000_000_000, 121e12, 0.3e12, 32e9),
}


def get_gpu(name: str) -> GPUSpec:
    """The GPU called `name` (case-insensitive).  Raises ValueError listing
    the known names when there is none."""
    try:
        return GPUS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown gpu {name!r}; known: {', '.join(g.name for g in GPUS.values())}") from None
