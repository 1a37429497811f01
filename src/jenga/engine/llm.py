"""LLM: the offline batch API (as vLLM's `LLM`).

`LLM(model, **engine_args)` takes vLLM's engine arguments by their vLLM
names or Jenga's (engine_args.py); `generate` queues every prompt on one
LLMEngine, steps it until all are done and returns the final outputs in
input order; `chat` renders conversations with the model's chat template
(exactly as transformers does) first.  Continuous batching, chunked
prefill and the prefix cache all apply across the batch.  Without
sampling_params, the model's generation_config.json supplies the defaults,
as in vLLM.  Progress bars are on by default (`use_tqdm`), on stderr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import count
from typing import Any

from ..sched.params import SamplingParams
from .config import EngineConfig
from .engine_args import engine_config
from .llm_engine import LLMEngine
from .outputs import RequestOutput
from .tokenizer import Tokenizer, read_chat_template
from .vision_inputs import chat_images, split_prompt

Prompt = str | Sequence[int]
Conversation = Sequence[Mapping[str, Any]]


class LLM:
    """`LLM(model=None, **engine_args)`: model is a folder or a repo id in
    the local Hugging Face cache (None: the bundled SmolLM2-135M-Instruct);
    the keywords are EngineConfig fields or their vLLM names (ValueError
    naming an unknown or bad one)."""

    def __init__(self, model: str | None = None, **engine_args: Any) -> None:
        self._start(engine_config(model, **engine_args))

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLM:
        """An LLM over an already built EngineConfig (the CLI's path)."""
        llm = cls.__new__(cls)
        llm._start(config)
        return llm

    def _start(self, config: EngineConfig) -> None:
        self.engine = LLMEngine(config)
        self._ids = count()

    def get_tokenizer(self) -> Tokenizer | None:
        return self.engine.tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams with the model's generation-config defaults."""
        return self.engine.default_sampling_params()

    def generate(self, prompts: Prompt | Sequence[Prompt], sampling_params: SamplingParams |
                 Sequence[SamplingParams] | None = None, use_tqdm: bool = True) -> list[RequestOutput]:
        """Complete each prompt (text, a list of token ids, or for a
        vision-language model a dict {"prompt" | "prompt_token_ids",
        "multi_modal_data": {"image": ...}} whose image tokens mark where the
        images go; a list of those for a batch).  `sampling_params` is one
        for all or one per prompt.  Returns final outputs in input order.
        Raises ValueError for a bad prompt, image or params, before anything
        runs."""
        single = isinstance(prompts, (str, Mapping)) or _is_id_list(prompts)
        batch = [prompts] if single else list(prompts)
        return self._run([(body, None, images) for body, images in map(split_prompt, batch)], sampling_params,
                         use_tqdm, "generate")

    def chat(self, messages: Conversation | Sequence[Conversation], sampling_params: SamplingParams |
             Sequence[SamplingParams] | None = None, use_tqdm: bool = True,
             add_generation_prompt: bool = True, chat_template: str | None = None,
             **template_kwargs: Any) -> list[RequestOutput]:
        """Answer one conversation (a list of {"role", "content"} dicts) or
        a list of them; outputs in input order, their `prompt` the rendered
        template.  Content is a string or a list of parts: {"type": "text",
        "text": ...}, and for vision-language models {"type": "image",
        "image": ...} or {"type": "image_url", "image_url": {"url": ...}}.
        `chat_template` (Jinja text or a file) replaces the model's;
        `template_kwargs` reach the template (e.g. enable_thinking).  Raises
        ValueError when there is no template, or a message or part is bad."""
        convs = [messages] if messages and isinstance(messages[0], Mapping) else list(messages)
        tok = self.engine.tokenizer
        if tok is None:
            raise ValueError("chat needs a tokenizer (skip_tokenizer_init is set)")
        template = read_chat_template(chat_template) if chat_template is not None else None
        batch = []
        for conv in convs:
            conv, images = chat_images(conv)
            text = tok.apply_chat_template(conv, add_generation_prompt=add_generation_prompt,
                                           chat_template=template, **template_kwargs)
            # the template wrote the special tokens: encode without adding more
            batch.append((tok.encode(text, add_special_tokens=False), text, images))
        return self._run(batch, sampling_params, use_tqdm, "chat")

    def _run(self, batch: list[tuple[Prompt, str | None, tuple]], sampling_params,
             use_tqdm: bool, what: str) -> list[RequestOutput]:
        if not batch:
            return []
        if sampling_params is None:
            sampling_params = self.engine.default_sampling_params()
        params = _params_per_prompt(sampling_params, len(batch))
        engine = self.engine
        ids = [f"llm-{next(self._ids)}" for _ in batch]
        try:
            for rid, (prompt, text, images), p in zip(ids, batch, params):
                engine.add_request(rid, prompt, p, prompt_text=text, images=images)
        except BaseException:
            for rid in ids:
                engine.abort(rid)
            raise
        final: dict[str, RequestOutput] = {}
        bar = _progress(len(ids), what) if use_tqdm else None
        wanted = set(ids)
        try:
            while len(final) < len(ids):
                for out in engine.step():
                    if out.finished and out.request_id in wanted:
                        final[out.request_id] = out
                        if bar is not None:
                            bar.update(1)
        except BaseException:   # leave the engine clean for the next call
            for rid in ids:
                engine.abort(rid)
            raise
        finally:
            if bar is not None:
                bar.close()
        return [final[rid] for rid in ids]


def _is_id_list(x: Any) -> bool:
    return isinstance(x, Sequence) and bool(x) and all(isinstance(t, int) for t in x)


def _params_per_prompt(sp, n: int) -> list[SamplingParams]:
    if isinstance(sp, SamplingParams):
        return [sp] * n
    sp = list(sp)
    if len(sp) != n:
        raise ValueError(f"sampling_params has {len(sp)} entries for {n} prompts")
    bad = [i for i, p in enumerate(sp) if not isinstance(p, SamplingParams)]
    if bad:
        raise ValueError(f"sampling_params[{bad[0]}] must be a SamplingParams")
    return sp


def _progress(total: int, what: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=f"Processed prompts ({what})", unit="req", dynamic_ncols=True)
