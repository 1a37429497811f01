"""Compile the Triton kernels for a GPU without one (ahead of time, sm_90).

    PYTHONPATH=src python scripts/triton_compile_check.py [--all] [--arch 90]

The interpreter (TRITON_INTERPRET=1, the CPU tests) runs the kernels'
Python semantics but never the GPU compiler, which has rules of its own
(tl.dot shapes and dtypes, constexpr branches, register pressure).  This
compiles the store, decode and prefill kernels with triton's bundled ptxas
for the head shapes of the GPU benchmark's models (Llama-3.2-1B: 4 query
heads per kv head of 64; Gemma-2-2B: 2 of 256; `--all` adds 8 of 128, MHA of
128, 3 of 64, bf16 queries over an fp8 cache and the fp32 variants the
GPU check uses), with the block
sizes `triton_prefill.block_sizes` picks, and reads each cubin's resource
use with cuobjdump.  Exits 1 when a kernel fails to compile or a bf16
kernel of the benchmark's shapes spills registers to the stack.  Needs no CUDA driver; the
interpreter must be off (it is unset here).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)   # before triton is imported: kernels must be JITFunctions

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from jenga.model.triton_attention import _store_kernel  # noqa: E402
from jenga.model.triton_decode import _decode_kernel  # noqa: E402
from jenga.model.triton_prefill import _prefill_kernel, block_sizes  # noqa: E402

FLOATS = {"scale", "softcap"}


def compile_one(fn, ptrs: dict, consts: dict, arch: int, warps: int = 4) -> str:
    """Compile `fn` (pointer args typed by `ptrs`, other non-constexpr args
    i32 or fp32) and return cuobjdump's resource line."""
    sig = {a: "constexpr" if a in consts else ptrs.get(a) or ("fp32" if a in FLOATS else "i32")
           for a in fn.arg_names}
    k = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", arch, 32),
                       options=dict(num_warps=warps))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    return next(line.strip() for line in out.splitlines() if "REG:" in line)


def variants(everything: bool):
    """(name, fn, ptrs, consts, warps, must_not_spill) to compile."""
    shapes = [(4, 64), (2, 256)] + ([(8, 128), (1, 128), (3, 64)] if everything else [])
    for dt in ("bf16", "fp32") if everything else ("bf16",):
        for group, d in shapes if dt == "bf16" else shapes[:1]:
            bm, bn, warps = block_sizes(group, d, interpret=False)
            consts = dict(GROUP=group, GROUP_PAD=triton.next_power_of_2(group), P=16, D=d, BLOCK_D=d,
                          BLOCK_M=bm, BLOCK_N=bn, HAS_WINDOW=True, HAS_CHUNK=False, HAS_SOFTCAP=True,
                          HAS_SINKS=True, DOT_PRECISION="ieee" if dt == "fp32" else "tf32", UPCAST=False)
            ptrs = dict(Q=f"*{dt}", K=f"*{dt}", V=f"*{dt}", Out=f"*{dt}", Table="*i64", QStart="*i32",
                        CtxLen="*i32", Sinks=f"*{dt}")
            yield f"prefill {dt} {group}x{d}", _prefill_kernel, ptrs, consts, warps, dt == "bf16"
            if everything and dt == "bf16" and (group, d) == shapes[0]:   # bf16 queries over an fp8 cache
                yield f"prefill bf16/fp8 {group}x{d}", _prefill_kernel, {**ptrs, "K": "*fp8e4nv", "V": "*fp8e4nv"}, \
                    consts, warps, False     # compiles; spills a little (no engine path uses fp8 KV yet)
        d = 128
        consts = dict(GROUP=4, P=16, BLOCK_P=16, D=d, BLOCK_D=d, HAS_WINDOW=True, HAS_CHUNK=True, HAS_SOFTCAP=True,
                      HAS_SINKS=True)
        ptrs = dict(Q=f"*{dt}", K=f"*{dt}", V=f"*{dt}", Out=f"*{dt}", Table="*i64", QPos="*i64", Sinks=f"*{dt}")
        yield f"decode  {dt} 4x{d}", _decode_kernel, ptrs, consts, 4, dt == "bf16"
        ptrs = dict(K=f"*{dt}", V=f"*{dt}", KCache=f"*{dt}", VCache=f"*{dt}", SlotPages="*i64", SlotOffsets="*i64")
        yield f"store   {dt} 8x{d}", _store_kernel, ptrs, dict(HKV=8, D=d, BLOCK_H=8, BLOCK_D=d), 4, dt == "bf16"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="every head shape and the fp32 variants")
    ap.add_argument("--arch", type=int, default=90, help="compute capability (90: H100 / H200)")
    args = ap.parse_args()
    ok = True
    for name, fn, ptrs, consts, warps, strict in variants(args.all):
        try:
            usage = compile_one(fn, ptrs, consts, args.arch, warps)
        except Exception as err:    # report every variant, then fail
            ok = False
            print(f"FAIL {name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            continue
        stack = int(re.search(r"STACK:(\d+)", usage).group(1))
        good = not (strict and stack)
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {name} warps={warps}: {usage.split(' CONSTANT')[0]}", flush=True)
    print("ALL OK" if ok else "FAILURES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
