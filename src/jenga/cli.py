"""`jenga` command line: plan | simulate | generate | serve | bench | demo.

Each subcommand is a thin shell over a library function; heavy modules
(torch, the server) are imported only by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import sys

from .cliutil import add_dataclass_args
from .sched.config import SchedulerConfig

ALLOCATORS = "jenga,max-page,static,uniform"


def _plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="memory plan and per-request waste of each allocator")
    p.add_argument("model", help="preset name (see `jenga plan --list`) or a config.json / model folder")
    p.add_argument("--context", type=int, default=None, help="tokens per request (default: the model's max)")
    p.add_argument("--image-tokens", type=int, default=None, help="image tokens per request (VLMs)")
    p.add_argument("--gpu", default="H100", help="GPU whose memory sets the budget (H100, H200, L4)")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor-parallel degree: plan one rank's pool (its KV heads, 1/tp of the weights)")
    p.add_argument("--kv-bytes", type=int, default=None, help="KV budget of one rank in bytes (overrides --gpu)")
    p.add_argument("--page-tokens", type=int, default=16)
    p.add_argument("--allocator", default=ALLOCATORS)
    p.add_argument("--kv-cache-dtype", default="auto",
                   help="storage dtype of K/V: auto (the model's), fp8 (= fp8_e4m3), fp8_e5m2, or per kind, "
                        "e.g. full=fp8,sliding=auto (Mamba states keep theirs unless named)")
    p.add_argument("--max-context", action="store_true",
                   help="also report the longest single request each allocator admits (paper Table 2)")
    p.add_argument("--prefill-chunk", type=int, default=2048,
                   help="tokens prefilled per step for --max-context (the scheduler's max_num_batched_tokens)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: __import__("jenga.commands.plan", fromlist=["x"]).main(a))


def _simulate_parser(sub) -> None:
    p = sub.add_parser("simulate", help="run a workload through the scheduler on a simulated GPU")
    p.add_argument("--model", default="ministral-8b")
    p.add_argument("--workload", default="arxiv_qa",
                   help="mmmu_pro | arxiv_qa | mmlu_pro | sharegpt | multiturn")
    p.add_argument("--trace", default=None, help="replay a JSONL trace instead of --workload")
    p.add_argument("--gpu", default="H100")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor-parallel degree: one rank's pool, all-reduces over the GPU's interconnect")
    p.add_argument("--allocator", default=ALLOCATORS)
    p.add_argument("--num-requests", type=int, default=None)
    p.add_argument("--rate", type=float, default=float("inf"), help="Poisson arrivals per second (inf: all at once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kv-bytes", type=int, default=None)
    p.add_argument("--kv-cache-dtype", default="auto",
                   help="storage dtype of K/V: auto (the model's), fp8 (= fp8_e4m3), fp8_e5m2, or per kind, "
                        "e.g. full=fp8,sliding=auto (Mamba states keep theirs unless named)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", default=None, help="write memory-by-group and batch-size plots to this PNG")
    p.add_argument("--no-progress", action="store_true")
    add_dataclass_args(p, SchedulerConfig, skip=("max_waiting",))
    p.set_defaults(func=lambda a: __import__("jenga.commands.simulate", fromlist=["x"]).main(a))


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True)
    m = bsub.add_parser("manager", help="CPU cost of the manager + scheduler per decode step")
    m.add_argument("--model", default="gemma-2-9b")
    m.add_argument("--running", default="64,256,1024")
    m.add_argument("--prompt-len", type=int, default=512)
    m.add_argument("--steps", type=int, default=50)
    m.add_argument("--allocator", default="jenga")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=lambda a: __import__("jenga.bench.manager", fromlist=["x"]).main(a))
    for name, module, attr in (("throughput", "jenga.bench.throughput", "add_args"),
                               ("serve", "jenga.bench.serve_client", "add_args"),
                               ("paper", "jenga.bench.paper", "add_args"),
                               ("prefix", "jenga.bench.prefix", "add_args"),
                               ("utilisation", "jenga.bench.utilisation", "add_args")):
        b = bsub.add_parser(name, help=f"{name} benchmark", add_help=False)
        b.set_defaults(_lazy=(module, attr))


def _external_parsers(sub) -> None:
    """Subcommands whose options live with their implementation."""
    for name, module, help_ in (("generate", "jenga.engine.cli_generate", "generate text with the real engine"),
                                ("serve", "jenga.server.cli_serve", "OpenAI-compatible HTTP server"),
                                ("demo", "jenga.demo", "the README's main job: a real demo on the defaults")):
        p = sub.add_parser(name, help=help_, add_help=False)
        p.set_defaults(_lazy=(module, "add_args"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jenga", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _plan_parser(sub)
    _simulate_parser(sub)
    _bench_parser(sub)
    _external_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    lazy = getattr(args, "_lazy", None)
    if lazy is not None:   # let the implementing module define and parse its own options
        module = __import__(lazy[0], fromlist=["x"])
        prog = "jenga " + " ".join(a for a in (args.command, getattr(args, "bench", None)) if a)
        sub = argparse.ArgumentParser(prog=prog)
        getattr(module, lazy[1])(sub)
        return int(module.main(sub.parse_args(rest)) or 0)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.func(args) or 0)
    except ValueError as e:   # library errors name the problem; no traceback for bad input
        print(f"jenga: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
