"""`jenga` command line: plan | simulate | generate | serve | bench | demo.

Each subcommand is a thin shell over a library function; heavy modules
(torch, the server) are imported only by the subcommands that need them.
"""

from __future__ import annotations

import argparse
import sys

from .cliutil import SIZE_HELP, OneLineParser, add_dataclass_args, parse_bytes
from .sched.config import SchedulerConfig

ALLOCATORS = "jenga,max-page,static,uniform"


def _sizing_args(p, page_tokens: bool = True) -> None:
    """Flags plan and simulate share, by vLLM's names with Jenga's aliases."""
    p.add_argument("--gpu", default="H100", help="GPU whose memory sets the budget: H100, H200 or L4 (default H100)")
    p.add_argument("--tensor-parallel-size", "--tp", dest="tp", type=int, default=1,
                   help="tensor-parallel degree: one rank's pool is planned (its KV heads, 1/tp of the "
                        "weights) (default 1)")
    p.add_argument("--kv-cache-memory-bytes", "--kv-bytes", dest="kv_bytes", type=parse_bytes, default=None,
                   metavar="BYTES", help=f"KV budget of one rank (overrides --gpu); {SIZE_HELP}")
    if page_tokens:
        p.add_argument("--block-size", "--page-tokens", dest="page_tokens", type=int, default=16,
                       help="tokens per small page of the attention groups (default 16)")
    p.add_argument("--allocator", default=ALLOCATORS, help=f"comma-separated allocators to compare (default {ALLOCATORS})")


def _plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="memory plan and per-request waste of each allocator")
    p.add_argument("model", nargs="?", default=None,
                   help="preset name (see `jenga plan --list`) or a config.json / model folder")
    p.add_argument("--list", action="store_true", help="list the built-in model presets and exit")
    p.add_argument("--context", "--max-model-len", dest="context", type=int, default=None,
                   help="tokens per request (default: the model's max)")
    p.add_argument("--image-tokens", type=int, default=None, help="image tokens per request (VLMs)")
    _sizing_args(p)
    p.add_argument("--kv-cache-dtype", default="auto",
                   help="storage dtype of K/V: auto (the model's), fp8 (= fp8_e4m3), fp8_e5m2, or per kind, "
                        "e.g. full=fp8,sliding=auto (Mamba states keep theirs unless named)")
    p.add_argument("--max-context", action="store_true",
                   help="also report the longest single request each allocator admits (paper Table 2)")
    p.add_argument("--prefill-chunk", type=int, default=2048,
                   help="tokens prefilled per step for --max-context (the scheduler's max_num_batched_tokens)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_plan_main)


def _plan_main(args) -> int:
    if args.list:
        from .memory.shapes.presets import PRESETS
        for name, shape in sorted(PRESETS.items()):
            print(f"{name:<24} {len(shape.layers):>4} layers  max context {shape.max_context:,}")
        return 0
    if args.model is None:
        raise ValueError("plan needs a MODEL (a preset name, see `jenga plan --list`, or a config.json / folder)")
    return __import__("jenga.commands.plan", fromlist=["x"]).main(args)


def _simulate_parser(sub) -> None:
    p = sub.add_parser("simulate", help="run a workload through the scheduler on a simulated GPU")
    p.add_argument("--model", default="ministral-8b",
                   help="preset name (see `jenga plan --list`) or a config.json / model folder (default ministral-8b)")
    p.add_argument("--workload", default="arxiv_qa",
                   help="mmmu_pro | arxiv_qa | mmlu_pro | sharegpt | multiturn")
    p.add_argument("--trace", default=None, help="replay a JSONL trace instead of --workload")
    _sizing_args(p, page_tokens=False)
    p.add_argument("--num-requests", "--num-prompts", dest="num_requests", type=int, default=None,
                   help="requests to simulate (default: the workload's)")
    p.add_argument("--rate", "--request-rate", dest="rate", type=float, default=float("inf"),
                   help="Poisson arrivals per second (inf: all at once)")
    p.add_argument("--seed", type=int, default=0, help="seed of the workload's random lengths (default 0)")
    p.add_argument("--kv-cache-dtype", default="auto",
                   help="storage dtype of K/V: auto (the model's), fp8 (= fp8_e4m3), fp8_e5m2, or per kind, "
                        "e.g. full=fp8,sliding=auto (Mamba states keep theirs unless named)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--plot", default=None, help="write memory-by-group and batch-size plots to this PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_args(p, SchedulerConfig, skip=("max_waiting",))
    p.set_defaults(func=lambda a: __import__("jenga.commands.simulate", fromlist=["x"]).main(a))


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True)
    m = bsub.add_parser("manager", help="CPU cost of the manager + scheduler per decode step")
    m.add_argument("--model", default="gemma-2-9b", help="preset name or config (default gemma-2-9b)")
    m.add_argument("--running", default="64,256,1024", help="comma-separated running-batch sizes to time")
    m.add_argument("--prompt-len", type=int, default=512, help="prompt tokens of each running request (default 512)")
    m.add_argument("--steps", type=int, default=50, help="decode steps timed per batch size (default 50)")
    m.add_argument("--allocator", default="jenga", help="memory manager flavour (default jenga)")
    m.add_argument("--json", action="store_true", help="print the results as JSON")
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
    parser = OneLineParser(prog="jenga", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _plan_parser(sub)
    _simulate_parser(sub)
    _bench_parser(sub)
    _external_parsers(sub)
    return parser


# what the torch extra installs: a missing one means a base install
_TORCH_EXTRA = {"torch", "transformers", "tokenizers", "safetensors", "fastapi", "uvicorn", "httpx",
                "prometheus_client", "PIL", "huggingface_hub", "jinja2", "triton"}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns its exit code.  A user mistake (a
    ValueError or FileNotFoundError from the library, a missing torch
    extra) is one line on stderr and exit code 2, never a traceback."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
    except SystemExit as e:   # --help, or a usage error already printed as one line
        return int(e.code or 0)
    prog = "jenga " + " ".join(a for a in (args.command, getattr(args, "bench", None)) if a)
    try:
        return _run(parser, args, rest, prog)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in _TORCH_EXTRA:
            raise
        print(f"{prog}: error: this needs the torch extra (module {e.name!r} is missing): "
              "pip install 'jenga[torch]'", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:   # library errors name the problem; no traceback
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:   # a subcommand's own usage error (one line) or --help
        return int(e.code or 0)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str], prog: str) -> int:
    lazy = getattr(args, "_lazy", None)
    if lazy is not None:   # let the implementing module define and parse its own options
        module = __import__(lazy[0], fromlist=["x"])
        sub = OneLineParser(prog=prog)
        getattr(module, lazy[1])(sub)
        return int(module.main(sub.parse_args(rest)) or 0)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
