"""Shared checks for the hybrid (attention + Mamba) families: a tiny
random-weight checkpoint with a byte tokenizer, full-prefill logits through
ModelRunner, state saves resumed through a PageCopy, and the real engine
(chunked prefill, prefix caching with mamba checkpoints, preemption) token
for token against transformers' generate."""

from __future__ import annotations

import json

import torch

from jenga.engine.config import EngineConfig
from jenga.engine.llm_engine import LLMEngine
from jenga.engine.runner import ModelRunner
from jenga.memory.planner import build_plan
from jenga.memory.shapes.hf import shape_from_path
from jenga.model.kv_pool import KVPool
from jenga.sched.params import SamplingParams
from jenga.sched.step import PageCopy, SeqStep, StateSave, StepPlan
from model_helpers import GREEDY, tiny_checkpoint

BASE = dict(vocab_size=258, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, bos_token_id=256, eos_token_id=257, pad_token_id=0)
NEW_TOKENS = 32
ENGINE_GREEDY = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)


def save_byte_tokenizer(path) -> None:
    """One token per byte plus <s> (256) and </s> (257, eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "bos_token": "<s>"}))


def make_checkpoint(hf_cls, config, path):
    """Random weights (noisy 1-D params), a sharpened lm_head so fp32
    rounding never flips a greedy argmax, a long SSM memory, and the byte
    tokenizer."""
    hf = tiny_checkpoint(hf_cls, config, path)
    with torch.no_grad():
        hf.lm_head.weight.mul_(8.0)
        g = torch.Generator().manual_seed(1)
        for mixer in (m for m in hf.modules() if hasattr(m, "A_log")):
            # The default init (dt ~ softplus(1), A ~ -1..-N, skip D ~ 1)
            # forgets within a few tokens and lets the skip drown the state,
            # which would hide a wrong state.  dt ~ 0.02, A in -1..-0.05 and
            # a small skip keep ~100 tokens of memory, and a louder out_proj
            # lets the mixers, not the MLPs, decide the output.
            bias = mixer.dt_bias if hasattr(mixer, "dt_bias") else mixer.dt_proj.bias
            bias.copy_(-4.0 + 0.5 * torch.randn(bias.shape, generator=g))
            mixer.A_log.copy_(torch.empty(mixer.A_log.shape).uniform_(0.05, 1.0, generator=g).log())
            mixer.D.copy_(0.1 * torch.randn(mixer.D.shape, generator=g))
            mixer.out_proj.weight.mul_(10.0)
    hf.save_pretrained(path)
    save_byte_tokenizer(path)
    return hf


def prompts() -> list[list[int]]:
    """Three prompts of 23, 57 and 63 tokens; all start with the same 20
    tokens and the last two with the same 40."""
    g = torch.Generator().manual_seed(3)
    shared = torch.randint(0, 256, (40,), generator=g).tolist()
    return [shared[:n] + torch.randint(0, 256, (k,), generator=g).tolist() for n, k in ((20, 3), (40, 17), (40, 23))]


def short_prompts() -> list[list[int]]:
    """Three prompts of 9, 14 and 17 tokens that grow to 41..49 tokens: they
    all fit a small pool when admitted and outgrow it while decoding."""
    g = torch.Generator().manual_seed(5)
    return [torch.randint(0, 256, (n,), generator=g).tolist() for n in (9, 14, 17)]


def hf_greedy(hf, prompt: list[int], n: int = NEW_TOKENS) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def hf_logits(hf, prompt: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([prompt]), position_ids=torch.arange(len(prompt))[None]).logits[0]


# -- runner level ------------------------------------------------------------
class Rig:
    """The memory side's plan (shape_from_path in fp32, 4-token attention
    pages), a pool poisoned with NaN, and the runner.  Group g draws its
    pages in order from its own large pages 16g, 16g+1, ..."""

    REGION = 16

    def __init__(self, model, path, budget: int = 4 << 20) -> None:
        self.plan = build_plan(shape_from_path(path, dtype="float32"), budget, page_tokens=4)
        assert self.plan.num_large_pages >= self.REGION * len(self.plan.groups)
        self.pool = KVPool(self.plan)
        self.pool.buffer.view(torch.float32).fill_(float("nan"))   # nothing may read unwritten bytes
        self.runner = ModelRunner(model, self.pool, self.plan)
        self.next = [g.gid * self.REGION * g.per_large for g in self.plan.groups]

    def page(self, gid: int) -> int:
        assert self.next[gid] < (gid + 1) * self.REGION * self.plan.groups[gid].per_large
        self.next[gid] += 1
        return self.next[gid] - 1

    def is_state(self, gid: int) -> bool:
        return bool(self.plan.groups[gid].spec.conv_state)

    def tables(self, tokens: int) -> tuple[tuple[int, ...], ...]:
        """A fresh page table per group: one running page per mamba group,
        enough 4-token pages for `tokens` elsewhere."""
        out = []
        for g in self.plan.groups:
            if self.is_state(g.gid):
                out.append((self.page(g.gid),))
            else:
                out.append(tuple(self.page(g.gid) for _ in range(-(-tokens // g.page_tokens))))
        return tuple(out)

    def zeros(self, tables) -> tuple[tuple[int, int], ...]:
        return tuple((gid, t[0]) for gid, t in enumerate(tables) if self.is_state(gid))

    def run(self, *seqs: SeqStep, copies=(), zeros=()) -> torch.Tensor:
        return self.runner.forward(StepPlan(0, seqs, copies=copies, zeros=zeros)).logits


def check_prefill_logits(hf, model, path, prompt: list[int]) -> None:
    rig = Rig(model, path)
    tables = rig.tables(len(prompt))
    logits = rig.run(SeqStep("a", tuple(prompt), 0, tables, True, GREEDY, len(prompt)), zeros=rig.zeros(tables))
    torch.testing.assert_close(logits[0], hf_logits(hf, prompt)[-1], rtol=0, atol=1e-4)


def check_saves_resume(hf, model, path, prompt: list[int]) -> None:
    """Request a prefills `prompt` in two chunks (13 then the rest) saving
    its state after 8, 20 and all tokens; request b resumes from the save at
    20 (a PageCopy into its running page, a's first five attention pages
    shared by reference) and must end with a's and transformers' logits;
    a decode step's save equals its running state."""
    rig = Rig(model, path)
    n = len(prompt)
    tables = rig.tables(n)
    gids = [g.gid for g in rig.plan.groups if rig.is_state(g.gid)]
    saves = {c: {gid: rig.page(gid) for gid in gids} for c in (8, 20, n)}
    save = lambda *cs: tuple(StateSave(gid, c, saves[c][gid]) for c in cs for gid in gids)   # noqa: E731
    rig.run(SeqStep("a", tuple(prompt[:13]), 0, tables, False, GREEDY, n, state_saves=save(8)),
            zeros=rig.zeros(tables))
    full = rig.run(SeqStep("a", tuple(prompt[13:]), 13, tables, True, GREEDY, n, state_saves=save(20, n)))
    ref = hf_logits(hf, prompt)
    torch.testing.assert_close(full[0], ref[-1], rtol=0, atol=1e-4)
    b_tables = tuple((rig.page(gid),) if rig.is_state(gid) else t[:5] + tuple(rig.page(gid) for _ in t[5:])
                     for gid, t in enumerate(tables))
    copies = tuple(PageCopy(gid, saves[20][gid], b_tables[gid][0]) for gid in gids)
    resumed = rig.run(SeqStep("b", tuple(prompt[20:]), 20, b_tables, True, GREEDY, n), copies=copies)
    torch.testing.assert_close(resumed[0], full[0], rtol=0, atol=1e-5)
    # the checkpoint at 8 restarts a prefill from its middle
    c_tables = tuple((rig.page(gid),) if rig.is_state(gid) else t[:2] + tuple(rig.page(gid) for _ in t[2:])
                     for gid, t in enumerate(tables))
    copies = tuple(PageCopy(gid, saves[8][gid], c_tables[gid][0]) for gid in gids)
    mid = rig.run(SeqStep("c", tuple(prompt[8:]), 8, c_tables, True, GREEDY, n), copies=copies)
    torch.testing.assert_close(mid[0], ref[-1], rtol=0, atol=1e-4)
    # a decode step that saves at its end writes the same bytes as its running page
    nxt = int(full[0].argmax())
    a_tables = tuple(t if rig.is_state(gid) else t + (rig.page(gid),) for gid, t in enumerate(tables))
    end_pages = {gid: rig.page(gid) for gid in gids}
    rig.run(SeqStep("a", (nxt,), n, a_tables, True, GREEDY, n,
                    state_saves=tuple(StateSave(gid, n + 1, end_pages[gid]) for gid in gids)))
    for gid in gids:
        raw = rig.pool.page_bytes(gid)
        assert torch.equal(raw[end_pages[gid]], raw[tables[gid][0]])


# -- engine level -------------------------------------------------------------
def engine(path, **kw) -> LLMEngine:
    cfg = dict(model=str(path), device="cpu", cpu_threads=1, kv_cache_memory=1 << 20, max_num_batched_tokens=24,
               mamba_checkpoint_interval=16)
    cfg.update(kw)
    return LLMEngine(EngineConfig(**cfg))


def run(eng: LLMEngine, batch: list[list[int]], prefix: str) -> list[list[int]]:
    """Generate for every prompt of the batch at once; tokens in input order."""
    return [list(o.outputs[0].token_ids) for o in run_outputs(eng, batch, prefix)]


def run_outputs(eng: LLMEngine, batch: list[list[int]], prefix: str, watch=None) -> list:
    """As `run`, but the final RequestOutputs; watch(eng) is called after
    every step but the last (invariants are checked after every step)."""
    for i, p in enumerate(batch):
        eng.add_request(f"{prefix}{i}", p, ENGINE_GREEDY)
    final = {}
    while eng.has_unfinished_requests():
        for out in eng.step():
            if out.finished:
                final[out.request_id] = out
        eng.manager.check_invariants()
        if watch and eng.has_unfinished_requests():
            watch(eng)
    return [final[f"{prefix}{i}"] for i in range(len(batch))]


# Hit tokens of the second batch (prompts of 23, 57, 63 tokens) in a roomy
# pool, for any Mamba hybrid (hits depend on the checkpoint rules, not the
# mixer).  jenga: checkpoints every 16 tokens and at each prompt's end
# rounded down to the 16-token page: 16 + 48 + 48.  uniform (vLLM v1):
# 32-token blocks: 16 + 32 + 16 rounded to blocks = 0 + 32 + 32.  max-page
# (vLLM v0): no checkpoints, no hits.  static caps the mamba group at a fixed
# share of the pool (a few large pages), where checkpoints evict one another:
# at most jenga's hits, how many depends on the order generated tokens evict.
SECOND_BATCH_HITS = {"jenga": 112, "uniform": 64, "static": range(1, 113), "max-page": 0}


def check_prefix_cache_run(path, refs, allocator: str) -> None:
    """Two batches of the same prompts: both equal transformers' greedy
    tokens, the second hits SECOND_BATCH_HITS[allocator], nothing leaks."""
    eng = engine(path, allocator=allocator, kv_cache_memory=4 << 20)
    assert run(eng, prompts(), "a") == refs[:3]
    first = eng.stats().hit_tokens
    assert run(eng, prompts(), "b") == refs[:3]
    hits, expected = eng.stats().hit_tokens - first, SECOND_BATCH_HITS[allocator]
    assert hits in expected if isinstance(expected, range) else hits == expected
    assert eng.stats().kv_used_bytes == 0


def check_small_pool_preempts(path, refs, kv_cache_memory: int, num_large_pages: int) -> None:
    """4-token attention pages make the large page small enough that the
    pool holds the three short prompts at admission but not their 32 new
    tokens each: requests are preempted and the tokens stay exact."""
    eng = engine(path, kv_cache_memory=kv_cache_memory, page_tokens=4)
    assert eng.plan.num_large_pages == num_large_pages
    assert run(eng, short_prompts(), "a") == refs[3:]
    assert eng.stats().num_preemptions > 0


def check_parallel_sampling_shares_state(path, refs) -> None:
    """n=3 greedy on the 57-token prompt: every child gives transformers'
    tokens; the two siblings wait for the first child's prefill and hit its
    prompt-end checkpoint (48 tokens: the prompt end rounded down to the
    16-token page), so the prompt is computed once plus 9 tokens each."""
    from dataclasses import replace
    eng = engine(path, kv_cache_memory=4 << 20)
    eng.add_request("p", prompts()[1], replace(ENGINE_GREEDY, n=3))
    final = None
    while eng.has_unfinished_requests():
        for out in eng.step():
            if out.finished:
                final = out
        eng.manager.check_invariants()
    assert [list(c.token_ids) for c in final.outputs] == [refs[1]] * 3
    assert eng.stats().hit_tokens == 2 * 48 and eng.stats().kv_used_bytes == 0
