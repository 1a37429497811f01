"""`jenga serve`: load the engine, then serve it over HTTP with uvicorn.

Flag names follow `vllm serve`.  Engine flags are generated from
`EngineConfig` (so they never drift from it); server flags are ours.  The
server listens on 127.0.0.1 unless told otherwise, and requires
`Authorization: Bearer KEY` on /v1/* when `--api-key` or the JENGA_API_KEY
environment variable is set.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..cliutil import SIZE_HELP, parse_bytes

log = logging.getLogger("jenga.server")


def add_args(parser: argparse.ArgumentParser) -> None:
    """All `jenga serve` options (the lead's CLI calls this)."""
    from ..engine.engine_args import add_engine_args

    parser.add_argument("model", nargs="?", default=None,
                        help="model folder or Hugging Face repo id in the local cache "
                             "(default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000)")
    parser.add_argument("--api-key", default=None,
                        help="require this bearer key on /v1/* (default: $JENGA_API_KEY if set)")
    parser.add_argument("--served-model-name", default=None,
                        help="model name clients send (default: the MODEL argument or the folder name)")
    parser.add_argument("--max-image-bytes", type=parse_bytes, default=20 * 2**20, metavar="BYTES",
                        help=f"largest image a request may send (default 20MiB); {SIZE_HELP}")
    parser.add_argument("--allowed-local-media-path", default=None,
                        help="directory from which chat messages may reference local image files")
    parser.add_argument("--max-request-bytes", type=parse_bytes, default=None, metavar="BYTES",
                        help="largest request body, 413 beyond it (default: derived from max_model_len, "
                             f"see docs/server.md); {SIZE_HELP}")
    parser.add_argument("--allowed-origins", nargs="+", default=(),
                        help="origins allowed to call the server from a browser (CORS; default: none)")
    parser.add_argument("--drain-timeout", type=float, default=5.0,
                        help="seconds in-flight requests may finish on shutdown; those still running then "
                             "get an error")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="server and engine log level (default info)")
    parser.add_argument("--disable-log-stats", action="store_true",
                        help="no periodic stats line (throughput, queues, KV use per group, hit rate) while busy")
    add_engine_args(parser)


def build_engine_config(args: argparse.Namespace):
    """EngineConfig from parsed flags.  Raises ValueError naming the field."""
    from ..engine.engine_args import engine_config_from_args

    cfg = engine_config_from_args(args, **({"model": args.model} if args.model is not None else {}))
    if cfg.skip_tokenizer_init:
        raise ValueError("skip_tokenizer_init: the server needs a tokenizer (it tokenizes prompts and renders chats)")
    return cfg


def build_server_config(args: argparse.Namespace, engine):
    from .app import ServerConfig

    name = args.served_model_name or (str(args.model).rstrip("/") if args.model else engine.model_path.name)
    api_key = args.api_key if args.api_key is not None else os.environ.get("JENGA_API_KEY") or None
    return ServerConfig(served_model_name=name, api_key=api_key, max_image_bytes=args.max_image_bytes,
                        allowed_local_media_path=args.allowed_local_media_path,
                        drain_timeout_s=args.drain_timeout, max_body_bytes=args.max_request_bytes,
                        allowed_origins=tuple(args.allowed_origins),
                        log_stats_interval_s=None if args.disable_log_stats else 10.0)


def serve_main(args: argparse.Namespace) -> int:
    """Load the engine and serve until interrupted.  Returns the exit code:
    0 after a shutdown signal, 1 when the engine failed for good, 2 for a
    bad option value (reported in one line, without a traceback)."""
    from ..engine.llm_engine import LLMEngine
    from .app import build_app
    from .run import run

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        engine = LLMEngine(build_engine_config(args))
        server_config = build_server_config(args, engine)
    except (ValueError, FileNotFoundError) as e:
        print(f"jenga serve: error: {e}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1") and server_config.api_key is None:
        log.warning("listening on %s without an API key: anyone who can reach it may use it", args.host)
    log.info("serving %s as %r on http://%s:%d/v1 (max_model_len %d)", engine.model_path,
             server_config.served_model_name, args.host, args.port, engine.max_model_len)
    try:
        return run(build_app(engine, server_config), host=args.host, port=args.port, log_level=args.log_level)
    finally:
        engine.close()   # tensor-parallel workers end with the server


main = serve_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jenga serve", description=__doc__.splitlines()[0])
    add_args(parser)
    return parser


if __name__ == "__main__":
    sys.exit(serve_main(build_parser().parse_args()))
