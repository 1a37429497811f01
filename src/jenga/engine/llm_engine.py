"""LLMEngine: the real engine, one step at a time.

It owns one of everything: the tokenizer, the model and its flat KV pool,
the MemoryPlan sized to the KV budget, the MemoryManager, the Scheduler and
one executor (sched/executor.py): the ModelRunner with its Sampler, with
a speculative_model the SpecRunner over target and draft in the same pool,
or with tensor_parallel_size > 1 the TPExecutor over the driver's shard
and its workers (engine/tp_executor.py; memory is planned per rank).
`step()` is schedule -> executor.execute -> scheduler.update -> detokenise /
stop strings -> outputs, one code path whatever the executor; observers
added with `add_step_observer` see every step as a StepEvent.  A step whose
executor raises fails its own requests (StepFailed) and the engine goes on;
repeated or device failures end it (EngineDead).  Requests enter with
`add_request` and leave when finished or aborted.  The server drives it
from one thread; `LLM` drives it to completion for offline batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..memory.kv_dtype import KVDtypeRule
from ..memory.manager import MemoryManager
from ..memory.plan import MemoryPlan
from ..memory.planner import artifact_static_share, build_plan
from ..memory.shapes.hf import shape_from_path
from ..model.cuda_graphs import graph_config
from ..model.kv_pool import KVPool
from ..model.families import model_class
from ..model.loader import load_model, read_config
from ..model.parallel import NO_TP
from ..sched.params import SamplingParams
from ..sched.request import FinishReason, Request
from ..sched.executor import Executor, StepEvent
from ..sched.scheduler import Scheduler
from ..sched.step import StepPlan, StepResult
from . import sizing
from .config import EngineConfig
from .executor import MAX_CONSECUTIVE_FAILURES, EngineDead, StepFailed, is_fatal
from .outputs import RequestOutput
from .parallel_sampling import Fanout, child_params
from .request_state import ReqOutputState
from .runner import ModelRunner
from .sampler import Sampler
from .spec_runner import SpecRunner
from .spec_shape import draft_layer_offset, merge_shapes
from .engine_args import generation_defaults
from .model_source import check_supported, resolve_model
from .tokenizer import Tokenizer, model_eos_token_ids, read_chat_template
from .vision_inputs import VisionPrompts

_log = logging.getLogger("jenga.engine")
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's counters and memory (see `LLMEngine.stats`)."""

    num_running: int
    num_waiting: int
    num_preemptions: int
    num_finished: int
    num_steps: int
    prompt_tokens: int
    hit_tokens: int
    generated_tokens: int
    kv_pool_bytes: int
    kv_used_bytes: int
    kv_cached_bytes: int
    kv_utilisation: float
    draft_tokens: int = 0
    accepted_tokens: int = 0
    encoder_runs: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted / verified draft tokens (0.0 before any was verified)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; ValueError for cuda without one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but torch sees no CUDA device")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" -> float32 on CPU, bfloat16 on GPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def load_tokenizer(config: EngineConfig, model_path: Path) -> Tokenizer:
    """The tokenizer of `config.tokenizer` (default: the model folder),
    with `config.chat_template` (text or a file) replacing the folder's.
    Raises ValueError when the folder has no tokenizer.json."""
    folder = model_path if config.tokenizer is None else resolve_model(config.tokenizer, what="tokenizer")
    try:
        tok = Tokenizer.from_pretrained(folder)
    except FileNotFoundError:
        raise ValueError(f"tokenizer: {folder} has no tokenizer.json (give tokenizer=FOLDER, or "
                         "skip_tokenizer_init=True for token-id prompts)") from None
    if config.chat_template is not None:
        tok.chat_template = read_chat_template(config.chat_template)
    return tok


class LLMEngine:
    """See module doc.  Construction loads the model (seconds) and raises
    ValueError for an unusable config (unknown model type, a max_model_len
    beyond the model's, a KV budget too small for one page)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        if config.model is None:
            from ..model.gguf_convert import default_model_path
            self.model_path = default_model_path()
        else:
            self.model_path = resolve_model(config.model)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if config.cpu_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(config.cpu_threads)
        hf_config = read_config(self.model_path)
        check_supported(self.model_path, hf_config)
        # KV lives in the compute dtype (or as kv_cache_dtype says), whatever dtype the checkpoint
        # was saved in; each tensor-parallel rank holds its share of every layer (per-rank bytes)
        self.shape = KVDtypeRule.parse(config.kv_cache_dtype).apply(
            shape_from_path(self.model_path, name=self.model_path.name,
                            dtype=_DTYPE_NAMES[self.dtype]).per_rank(config.tensor_parallel_size))
        self.max_model_len = self._max_model_len(config)
        self.generation_defaults = generation_defaults(config.generation_config, self.model_path)
        self.default_sampling_params()   # a bad default is a ValueError now, not at the first request
        if self.generation_defaults:
            _log.info("default sampling parameters from %s: %s", config.generation_config, self.generation_defaults)
        self.tokenizer = None if config.skip_tokenizer_init else load_tokenizer(config, self.model_path)
        self.eos_token_ids = tuple(self.tokenizer.eos_token_ids) if self.tokenizer is not None else \
            tuple(dict.fromkeys(model_eos_token_ids(self.model_path)))
        text_cfg = hf_config.get("text_config") or {}
        vocab = hf_config.get("vocab_size") or text_cfg.get("vocab_size")
        self.vocab_size = int(vocab or self.tokenizer.vocab_size)
        self.tp_group = None
        try:
            self._build(config, hf_config)
        except BaseException:
            if self.tp_group is not None:
                self.tp_group.close()
            raise

    def _build(self, config: EngineConfig, hf_config: dict) -> None:
        """Load the model (with tensor parallelism: start the workers, load
        this rank's shard), plan memory, build the executor."""
        shard = NO_TP
        if config.tensor_parallel_size > 1:
            shard = self._start_workers(config, hf_config)
        self.model = load_model(self.model_path, self.device, self.dtype, shard)
        target_shape, self.draft_model = self.shape, None
        if config.speculative_model is not None:
            self.shape, self.draft_model = self._load_draft(resolve_model(config.speculative_model, what="speculative_model"))
            self.max_model_len = self._max_model_len(config)
        self.plan = self._build_plan(config, self._kv_budget())
        self.manager = MemoryManager(self.plan, enable_prefix_caching=config.enable_prefix_caching,
                                     mamba_interval=config.mamba_checkpoint_interval)
        # the context the pool can hold (lowered and logged, or a ValueError naming the flags)
        self.max_model_len = sizing.fit_max_model_len(
            self.manager, model_len=self.shape.max_context or self.max_model_len, user_len=config.max_model_len,
            chunk=config.max_num_batched_tokens, spare=2 * config.num_speculative_tokens, budget_source=self._budget_source())
        self.scheduler = Scheduler(config.scheduler_config(), self.manager, max_model_len=self.max_model_len)
        self.kv_pool = KVPool(self.plan, device=self.device)
        self.sampler = Sampler(self.eos_token_ids, seed=config.seed)
        graphs = graph_config(self.model, self.device, enforce_eager=config.enforce_eager,
                              max_num_seqs=config.max_num_seqs, max_model_len=self.max_model_len)
        self.runner = ModelRunner(self.model, self.kv_pool, self.plan, sampler=self.sampler, cuda_graphs=graphs)
        self.executor: Executor = self.runner
        if self.draft_model is not None:
            draft = ModelRunner(self.draft_model, self.kv_pool, self.plan,
                                layer_offset=draft_layer_offset(target_shape))
            self.executor = SpecRunner(self.runner, draft, self.sampler, config.num_speculative_tokens)
        if self.tp_group is not None:
            from .tp_executor import TPExecutor
            self.executor = TPExecutor(self.tp_group, self.runner)
        self._states: dict[str, ReqOutputState] = {}
        self._num_steps = 0
        self._generated = 0
        self._failures = 0   # consecutive failed steps
        self._fanout = Fanout()   # requests with n > 1 and their children
        self._observers: list[Callable[[StepEvent], None]] = []
        # vision-language families: image loading, placeholders, ImageRefs (docs/vlm.md)
        self.vision = VisionPrompts(self.model, self.model_path) if self.runner.images is not None else None
        self._encoder_runs = 0

    def _start_workers(self, config: EngineConfig, hf_config: dict):
        """Spawn (or join) the tensor-parallel workers and have them load
        their shards; returns the driver's shard.  ValueError for a family
        that is not sharded, before any process starts."""
        from .tp_executor import TPGroup
        from .tp_worker import WorkerSetup
        cls = model_class(hf_config.get("model_type", ""))
        if not cls.tensor_parallel:
            raise ValueError(f"tensor_parallel_size={config.tensor_parallel_size}: {cls.__name__} is not sharded "
                             "yet (docs/parallel.md lists the families that are)")
        self.tp_group = TPGroup.start(config.tensor_parallel_size, config.distributed_timeout_s)
        self.tp_group.load(WorkerSetup(str(self.model_path), _DTYPE_NAMES[self.dtype], self.device.type,
                                       config.cpu_threads, "auto", config.distributed_timeout_s))
        return self.tp_group.shard

    def close(self) -> None:
        """Release the executor (with tensor parallelism: end every
        worker); idempotent.  The engine cannot step afterwards."""
        self.executor.close()

    def _load_draft(self, path: Path):
        """(target+draft shape, draft model); ValueError when the draft's
        vocabulary differs from the target's."""
        cfg = read_config(path)
        vocab = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
        if vocab != self.vocab_size:
            raise ValueError(f"speculative_model {path} has vocab_size {vocab}, the target {self.vocab_size}")
        draft_shape = KVDtypeRule.parse(self.config.kv_cache_dtype).apply(
            shape_from_path(path, name=path.name, dtype=_DTYPE_NAMES[self.dtype]))
        return merge_shapes(self.shape, draft_shape), load_model(path, self.device, self.dtype)

    def _max_model_len(self, config: EngineConfig) -> int:
        limit = self.shape.max_context
        if config.max_model_len is None:
            return limit
        if limit and config.max_model_len > limit:
            raise ValueError(f"max_model_len={config.max_model_len} exceeds the model's context of {limit}")
        return config.max_model_len

    def _build_plan(self, config: EngineConfig, budget: int) -> MemoryPlan:
        """The allocator's plan for a KV budget; `static` splits the pool
        as the paper artifact's static partition does (by page bytes,
        sliding and Mamba groups halved), fixed before any request."""
        kw = {"page_tokens": config.page_tokens}
        if config.allocator == "static":
            probe = build_plan(self.shape, budget, allocator="jenga", **kw)
            kw["static_share"] = artifact_static_share(probe.groups)
        return build_plan(self.shape, budget, allocator=config.allocator, **kw)

    def _kv_budget(self) -> int:
        if self.config.kv_cache_memory is not None:
            return self.config.kv_cache_memory
        if self.device.type != "cuda":   # sized for the full context, within the memory left (sizing.py)
            spare = 2 * self.config.num_speculative_tokens
            return sizing.default_cpu_pool_bytes(lambda b: self._build_plan(self.config, b),
                                                 self.max_model_len + spare, self.config.max_num_batched_tokens,
                                                 sizing.available_memory_bytes())
        free, total = torch.cuda.mem_get_info(self.device)
        budget = int(free - total * (1.0 - self.config.gpu_memory_utilization))
        if budget <= 0:
            raise ValueError(f"gpu_memory_utilization={self.config.gpu_memory_utilization} leaves no memory for "
                             f"the KV pool ({free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB)")
        return budget

    def _budget_source(self) -> str:
        """How the KV budget was chosen, as error messages name it."""
        if self.config.kv_cache_memory is not None:
            return f"kv_cache_memory={sizing.mib(self.config.kv_cache_memory)} (--kv-cache-memory)"
        if self.device.type == "cuda":
            return f"gpu_memory_utilization={self.config.gpu_memory_utilization} (--gpu-memory-utilization)"
        return "the default CPU pool (sized from available memory; set --kv-cache-memory)"

    def default_sampling_params(self) -> SamplingParams:
        """SamplingParams() with the generation config's defaults (vLLM's
        `--generation-config`); ValueError naming a bad one."""
        try:
            return SamplingParams(**self.generation_defaults)
        except ValueError as e:
            raise ValueError(f"generation_config: {e}") from None

    # ---------------------------------------------------------- requests
    def add_request(self, request_id: str, prompt: str | Sequence[int], params: SamplingParams | None = None,
                    arrival_time: float | None = None, *, prompt_text: str | None = None,
                    cache_salt: str = "", images: Sequence | None = None) -> None:
        """Queue a request.  `prompt` is text (tokenised here) or token ids;
        `prompt_text` labels an id prompt in the outputs; `images` (paths,
        PIL images or tensors) go with the prompt's image tokens, for
        vision-language models.  Raises ValueError for a duplicate id, an
        empty or too long prompt, out-of-vocabulary ids, bad params, images
        a model cannot take or that do not load, and
        sched.scheduler.QueueFull when the queue is full."""
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
        if request_id in self._states or request_id in self._fanout.parents:
            raise ValueError(f"request id {request_id!r} is already in use")
        self._check_params(params)
        if params.n > 1:
            self._add_parent(request_id, prompt, params, arrival_time, prompt_text, cache_salt, images)
            return
        text, ids = self._tokenize(prompt, prompt_text)
        refs, inputs = (), ()
        if images and self.vision is None:
            raise ValueError(f"images: model {self.model_path.name} ({type(self.model).__name__}) does not "
                             "accept images")
        if self.vision is not None:
            prep = self.vision.prepare(ids, images or (), cache_salt)
            ids, refs, inputs, cache_salt = list(prep.token_ids), prep.images, prep.inputs, prep.cache_salt
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt has {len(ids)} tokens; max_model_len={self.max_model_len} leaves no room "
                             "for an output token")
        eos = self.eos_token_ids
        if len(eos) > 1 and not params.ignore_eos:   # the scheduler knows one eos; the rest stop like stop ids
            extra = tuple(t for t in eos[1:] if t not in params.stop_token_ids)
            sched_params = replace(params, stop_token_ids=params.stop_token_ids + extra)
        else:
            sched_params = params
        arrival = time.monotonic() if arrival_time is None else arrival_time
        req = Request(request_id, ids, params=sched_params, images=refs, arrival_time=arrival,
                      cache_salt=cache_salt, eos_token_id=eos[0] if eos else None)
        self.scheduler.add_request(req)
        if params.repetition_penalty != 1.0:   # it covers the prompt, which the sampler may never see
            self.sampler.add_prompt(request_id, ids)
        if refs:
            self.executor.register_inputs(request_id, inputs)
        self._states[request_id] = ReqOutputState(request_id, text, tuple(ids), params, self.tokenizer, arrival)

    def _check_params(self, params: SamplingParams) -> None:
        """ValueError naming the field the model or engine cannot honour."""
        bad = [t for t in (params.logit_bias or {}) if t >= self.vocab_size]
        if bad:
            raise ValueError(f"logit_bias: token ids {bad[:5]} are outside the vocabulary of {self.vocab_size}")
        if self.tokenizer is None and params.stop:
            raise ValueError("stop: stop strings need a tokenizer (skip_tokenizer_init is set); use stop_token_ids")
        if params.logprobs is not None and self.draft_model is not None:
            raise ValueError("logprobs: not supported with speculative decoding yet")

    def _tokenize(self, prompt: str | Sequence[int], prompt_text: str | None) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt must be non-empty")
            if self.tokenizer is None:
                raise ValueError("prompt: text needs a tokenizer (skip_tokenizer_init is set); give token ids")
            return prompt, self.tokenizer.encode(prompt)
        ids = list(prompt)
        if not ids:
            raise ValueError("prompt must contain at least one token")
        vocab = self.vocab_size
        image_token = self.vision.image_token_id if self.vision is not None else None
        bad = [t for t in ids if not isinstance(t, int) or isinstance(t, bool)
               or not (0 <= t < vocab or t == image_token)]
        if bad:
            raise ValueError(f"prompt token ids must be integers in [0, {vocab}), got {bad[:5]}")
        return prompt_text, ids

    def _add_parent(self, request_id, prompt, params, arrival_time, prompt_text, cache_salt, images) -> None:
        """n children of one prompt (engine/parallel_sampling.py); all or none are queued."""
        children = [c for c in self._fanout.add(request_id, params.n)]
        try:
            for i, c in enumerate(children):
                self.add_request(c, prompt, child_params(params, i), arrival_time, prompt_text=prompt_text,
                                 cache_salt=cache_salt, images=images)
        except BaseException:
            for c in children:
                self._abort_one(c)
            self._fanout.drop(request_id)
            raise

    def abort(self, request_id: str) -> RequestOutput | None:
        """End a request now (all n sequences of a parallel-sampling
        request); returns its final output (finish_reason "abort"), or None
        for an unknown or already finished id."""
        parent = self._fanout.parents.get(request_id)
        if parent is None:
            return self._abort_one(request_id)
        out = None
        for c in parent.children:
            final = self._abort_one(c)
            if final is not None:
                out = self._fanout.fold(final)
        self._fanout.drop(request_id)
        return out

    def _abort_one(self, request_id: str) -> RequestOutput | None:
        state = self._states.pop(request_id, None)
        if state is None:
            return None
        self.scheduler.finish_request(request_id, FinishReason.ABORT)   # the next plan's `finished` tells the executor
        return state.abort(time.monotonic())

    def has_unfinished_requests(self) -> bool:
        return bool(self._states) or self.scheduler.has_unfinished()

    def get_num_unfinished_requests(self) -> int:
        """Unfinished requests as the user counts them (n sequences of one
        prompt are one request)."""
        return len({self._fanout.user_id(r) for r in self._states})

    # -------------------------------------------------------------- step
    def add_step_observer(self, observer: Callable[[StepEvent], None]) -> None:
        """Call `observer(event)` after every step, in the engine's thread;
        what it does is not timed as part of the step."""
        self._observers.append(observer)

    def step(self) -> list[RequestOutput]:
        """Run one scheduler step; return an output for every request that
        gained text or tokens or finished in it.  Raises StepFailed when the
        executor failed (its requests are finished with "error", the engine
        goes on) and EngineDead when it cannot go on (every request failed)."""
        t0 = time.perf_counter()
        plan = self.scheduler.schedule()
        self._mark_scheduled(plan)
        result = self._execute(plan)
        now = time.monotonic()
        updates = self.scheduler.update(plan, result, now)
        outputs = []
        for u in updates:
            state = self._states.get(u.req_id)
            if state is None or (not u.new_token_ids and not u.finished):
                continue
            self._generated += len(u.new_token_ids)
            step = state.apply(u.new_token_ids, u.finish_reason if u.finished else None, now, u.num_cached_tokens,
                               result.logprobs.get(u.req_id, ())[:len(u.new_token_ids)])
            if step.stopped_by is not None:
                self.scheduler.finish_request(u.req_id, FinishReason.STOP)
            if state.finished:
                del self._states[u.req_id]
            outputs.append(self._fanout.fold(step.output))
        if self._observers:
            s = self.scheduler
            event = StepEvent(plan, result, len(s.running), len(s.waiting), s.stats.waiting_for_memory,
                              time.perf_counter() - t0)
            for observer in self._observers:
                observer(event)
        return outputs

    def _mark_scheduled(self, plan: StepPlan) -> None:
        """Stamp requests computed for the first time (queue-time metrics);
        a request's first step starts at token 0 or at its prefix hit."""
        now = None
        for s in plan.seqs:
            if s.start < s.prompt_len:
                state = self._states.get(s.req_id)
                if state is not None and state.first_scheduled_time is None:
                    now = now or time.monotonic()
                    state.first_scheduled_time = now

    def _execute(self, plan: StepPlan) -> StepResult:
        """The executor's result for `plan` (an empty one when there is
        nothing to run); counts the step.  On failure ends the plan's
        requests with "error" and raises StepFailed, or EngineDead."""
        if plan.empty and not plan.finished:
            return StepResult({})
        try:
            result = self.executor.execute(plan)
        except Exception as err:
            self._failures += 1
            if is_fatal(err) or self._failures >= MAX_CONSECUTIVE_FAILURES:
                outputs = self.fail_all(f"engine stopped after a step failure: {type(err).__name__}: {err}")
                raise EngineDead(f"engine cannot go on: {type(err).__name__}: {err}", outputs) from err
            outputs = self._fail(self._with_siblings(s.req_id for s in plan.seqs))
            raise StepFailed(list(outputs), list(outputs.values()), err) from err
        self._failures = 0
        if not plan.empty:
            self._num_steps += 1
        self._encoder_runs += result.encoder_runs
        return result

    def _with_siblings(self, req_ids) -> list[str]:
        """req_ids plus the live siblings of any parallel-sampling child
        among them (a request fails whole)."""
        out = {}
        for rid in req_ids:
            parent = self._fanout.parents.get(self._fanout.user_id(rid))
            for r in (parent.children if parent is not None else (rid,)):
                if r in self._states:
                    out[r] = None
        return list(out)

    def _fail(self, req_ids: Sequence[str]) -> dict[str, RequestOutput]:
        """Finish `req_ids` with "error" (pages freed); their final outputs
        by user-level request id (a parallel-sampling parent once)."""
        now, outputs = time.monotonic(), {}
        for rid in req_ids:
            state = self._states.pop(rid, None)
            self.scheduler.finish_request(rid, FinishReason.ERROR)
            if state is not None:
                out = self._fanout.fold(state.apply((), FinishReason.ERROR, now).output)
                outputs[out.request_id] = out
        return outputs

    def fail_all(self, reason: str) -> list[RequestOutput]:
        """Finish every request with "error" (engine shutdown or death);
        returns their final outputs.  `reason` is for the log."""
        _log.error("failing %d request(s): %s", len(self._states), reason)
        return list(self._fail(list(self._states)).values())

    @property
    def supports_images(self) -> bool:
        """Whether add_request takes images (a vision-language model)."""
        return self.vision is not None

    def stats(self) -> EngineStats:
        s, usage = self.scheduler.stats, self.manager.usage()
        return EngineStats(len(self.scheduler.running), len(self.scheduler.waiting), s.num_preemptions,
                           s.num_finished, self._num_steps, s.prompt_tokens, s.hit_tokens, self._generated,
                           usage.pool_bytes, usage.used_bytes, usage.cached_bytes, usage.utilisation,
                           s.draft_tokens, s.accepted_tokens, self._encoder_runs)
