"""`jenga generate`: complete prompts with the real engine from the shell.

The lead's cli.py hands the arguments after `generate` to `add_args` /
`main`.  Engine options come from EngineConfig's fields (one flag each,
via cliutil), sampling options from SamplingParams'.  `--chat` wraps each
prompt as a user message in the model's chat template; `--stream` prints
text as it is produced.  Without `--model` the bundled SmolLM2-135M-Instruct
is used (converted once from its GGUF).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..sched.params import SamplingParams
from .engine_args import add_engine_args, engine_config_from_args

_SAMPLING_FLAGS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "min_tokens", "ignore_eos",
                   "include_stop_str_in_output", "presence_penalty", "frequency_penalty", "repetition_penalty",
                   "n", "logprobs")


def add_args(parser: argparse.ArgumentParser) -> None:
    """Define `jenga generate`'s options on `parser`."""
    parser.add_argument("prompts", nargs="+", help="prompt text(s); each is one request")
    parser.add_argument("--model", default=None,
                        help="model folder or Hugging Face repo id in the local cache "
                             "(default: bundled SmolLM2-135M-Instruct)")
    add_engine_args(parser, skip=("model", "seed"))
    parser.add_argument("--engine-seed", dest="engine_seed", type=int, default=None,
                        help="seed of the sampler for requests without --seed (EngineConfig.seed, default 0)")
    group = parser.add_argument_group("sampling")
    group.add_argument("--max-tokens", type=int, default=64, help="most tokens to generate per prompt (default 64)")
    group.add_argument("--temperature", type=float, default=0.0,
                       help="sampling temperature; below 1e-5 is greedy (default 0: greedy)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1] (default 1: off)")
    group.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default 0: off)")
    group.add_argument("--min-p", type=float, default=0.0,
                       help="drop tokens below min-p x the top token's probability (default 0: off)")
    group.add_argument("--presence-penalty", type=float, default=0.0, help="in [-2, 2], once per seen token")
    group.add_argument("--frequency-penalty", type=float, default=0.0, help="in [-2, 2], per occurrence")
    group.add_argument("--repetition-penalty", type=float, default=1.0,
                       help="> 0; 1 is off; divides the logits of prompt and output tokens")
    group.add_argument("--seed", type=int, default=None, help="per-request seed (reproducible samples)")
    group.add_argument("--n", type=int, default=1, help="completions per prompt (default 1)")
    group.add_argument("--logprobs", type=int, default=None,
                       help="print the top-N log-probabilities of each token (with --json)")
    group.add_argument("--min-tokens", type=int, default=0, help="tokens before eos or a stop id may end it")
    group.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    group.add_argument("--ignore-eos", action="store_true", help="keep generating past the eos token")
    group.add_argument("--include-stop-str-in-output", action="store_true",
                       help="keep the stop string at the end of the text")
    parser.add_argument("--chat", action="store_true", help="apply the model's chat template to each prompt")
    parser.add_argument("--stream", action="store_true", help="print text as it is generated")
    parser.add_argument("--json", action="store_true", help="print one JSON object per request")


def build(args: argparse.Namespace):
    """The engine config and sampling params the options describe
    (ValueError naming a bad field)."""
    extra = {"seed": args.engine_seed} if args.engine_seed is not None else {}
    config = engine_config_from_args(args, model=args.model, **extra)
    params = SamplingParams(stop=tuple(args.stop), **{k: getattr(args, k) for k in _SAMPLING_FLAGS})
    return config, params


def main(args: argparse.Namespace) -> int:
    """Run the prompts; print each completion (or JSON lines).  Returns 0,
    or 2 with a message on stderr for invalid options."""
    try:
        config, params = build(args)
        from .llm import LLM   # torch and the model load only once the options are valid
        llm = LLM.from_config(config)
        t0 = time.perf_counter()
        try:
            if args.stream:
                outputs = _stream(llm, args.prompts, params, args.chat)
            elif args.chat:
                outputs = llm.chat([[{"role": "user", "content": p}] for p in args.prompts], params, use_tqdm=False)
            else:
                outputs = llm.generate(args.prompts, params, use_tqdm=False)
        finally:
            llm.engine.close()   # tensor-parallel workers end here
    except ValueError as e:
        print(f"jenga generate: error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    for user_prompt, out in zip(args.prompts, outputs):
        c = out.outputs[0]
        if args.json:
            row = {"prompt": user_prompt, "text": c.text, "token_ids": list(c.token_ids),
                   "finish_reason": c.finish_reason, "num_prompt_tokens": len(out.prompt_token_ids),
                   "num_cached_tokens": out.num_cached_tokens}
            if len(out.outputs) > 1:
                row["texts"] = [o.text for o in out.outputs]
            if c.logprobs is not None:
                row["logprobs"] = [{str(t): lp.logprob for t, lp in d.items()} for d in c.logprobs]
            print(json.dumps(row, ensure_ascii=False))
        elif not args.stream:
            print(f"--- {user_prompt!r}\n{c.text}\n[{len(c.token_ids)} tokens, finish_reason={c.finish_reason}]")
    n = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(f"{len(outputs)} request(s), {n} tokens in {elapsed:.2f}s ({n / max(elapsed, 1e-9):.1f} tok/s)",
          file=sys.stderr)
    return 0


def _stream(llm, prompts: list[str], params: SamplingParams, chat: bool) -> list:
    """Step the engine by hand, printing the first request's deltas as they
    come (others are printed whole at the end)."""
    engine, tok = llm.engine, llm.get_tokenizer()
    ids = [f"cli-{i}" for i in range(len(prompts))]
    for rid, p in zip(ids, prompts):
        if chat:
            text = tok.apply_chat_template([{"role": "user", "content": p}])
            engine.add_request(rid, tok.encode(text, add_special_tokens=False), params, prompt_text=text)
        else:
            engine.add_request(rid, p, params)
    final = {}
    while len(final) < len(ids):
        for out in engine.step():
            if out.request_id == ids[0] and out.delta is not None:
                print(out.delta.text, end="", flush=True)
            if out.finished:
                final[out.request_id] = out
    print()
    for p, rid in zip(prompts[1:], ids[1:]):
        print(f"--- {p!r}\n{final[rid].outputs[0].text}")
    return [final[rid] for rid in ids]


generate_main = main   # the name the lead's CLI brief uses
