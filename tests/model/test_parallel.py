"""Sharded families against the unsharded model, in one process: N threads
each load rank r's shard from the same safetensors file (each its own gloo
process group over one in-memory store, so the all-reduces are real) and
run the same steps (two prefill chunks, decodes, sliding pages released)
over a pool planned per rank; rank 0's logits must equal the TP=1 model's
and its greedy tokens be the same.  TP=4 over 2 KV heads replicates each KV
head on two ranks.  (The process model is tested in
tests/engine/test_tp_engine.py; spawning costs seconds per process.)"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import transformers as tf

from jenga.engine.runner import ModelRunner
from jenga.memory.planner import build_plan
from jenga.memory.shapes.hf import shape_from_config
from jenga.model.kv_pool import KVPool
from jenga.model.loader import load_model, read_config
from jenga.model.parallel import TPShard, head_ranges
from jenga.sched.step import StepPlan
from model_helpers import Pages, seq, tiny_checkpoint

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, head_dim=16)

CASES = {
    "llama": lambda: (tf.LlamaForCausalLM, tf.LlamaConfig(
        **BASE, num_hidden_layers=2, attention_bias=True, mlp_bias=True, tie_word_embeddings=True)),
    "qwen3": lambda: (tf.Qwen3ForCausalLM, tf.Qwen3Config(**BASE, num_hidden_layers=2, tie_word_embeddings=False)),
    "gemma2": lambda: (tf.Gemma2ForCausalLM, tf.Gemma2Config(
        **BASE, num_hidden_layers=2, sliding_window=8, query_pre_attn_scalar=24,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0)),
    "gemma3": lambda: (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig(
        **BASE, num_hidden_layers=3, sliding_window=8, query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])),
    "gpt_oss": lambda: (tf.GptOssForCausalLM, tf.GptOssConfig(
        **{**BASE, "intermediate_size": 32}, num_hidden_layers=2, sliding_window=8,
        num_local_experts=4, num_experts_per_tok=2)),
}
NEW_TOKENS = 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _plan(path, tp: int):
    shape = shape_from_config(read_config(path), dtype="float32").per_rank(tp)
    return build_plan(shape, 1 << 20, page_tokens=4)


def _run(model, plan, prompts, forced=None):
    """Two requests: each prompt in two chunks (b joins a step later), then
    decodes; feeds `forced` tokens when given (the reference's), else the
    greedy ones.  Returns (per-step logits of rank 0, tokens per request)."""
    runner, pages = ModelRunner(model, KVPool(plan), plan), Pages(plan)
    done, out, logits = {"a": 0, "b": 0}, {"a": [], "b": []}, []
    chunks = {r: [p[:len(p) // 2], p[len(p) // 2:]] for r, p in zip("ab", prompts)}
    for step in range(NEW_TOKENS + 3):
        seqs = []
        for r, join in (("a", 0), ("b", 1)):
            k = step - join
            if 0 <= k and len(out[r]) < NEW_TOKENS:
                toks = chunks[r][k] if k < 2 else [out[r][-1]]
                seqs.append(seq(pages, r, toks, done[r], sample=k >= 1))
        if not seqs:
            break
        res = runner.forward(StepPlan(step, tuple(seqs)))
        logits.append(res.logits)
        for s in seqs:
            done[s.req_id] = s.end
            pages.release(s.req_id, s.end)
        for rid, row in zip(res.req_ids, res.logits):
            tok = forced[rid][len(out[rid])] if forced else int(row.argmax())
            out[rid].append(tok)
    return logits, out


def _sharded(path, tp: int, prompts, forced):
    """Rank 0's (logits, tokens) of `tp` rank threads replaying `forced`."""
    store, results, errors = dist.HashStore(), {}, []

    def rank(r: int) -> None:
        try:
            group = dist.ProcessGroupGloo(dist.PrefixStore("t", store), r, tp, timedelta(seconds=60))
            model = load_model(path, shard=TPShard(r, tp, group))
            results[r] = _run(model, _plan(path, tp), prompts, forced)
        except BaseException as err:   # surfaced below; the other ranks time out
            errors.append(err)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(tp)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results[0]


@pytest.mark.parametrize("family,tp", [(f, 2) for f in sorted(CASES)] + [("llama", 4), ("gpt_oss", 4)])
def test_sharded_family_matches_unsharded(family, tp, tmp_path):
    hf_cls, cfg = CASES[family]()
    tiny_checkpoint(hf_cls, cfg, tmp_path)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (14, 21)]
    ref_logits, ref_tokens = _run(load_model(tmp_path), _plan(tmp_path, 1), prompts)
    logits, tokens = _sharded(tmp_path, tp, prompts, ref_tokens)
    assert len(logits) == len(ref_logits)
    for ours, ref in zip(logits, ref_logits):
        assert ours.shape == ref.shape
        if ref.numel():
            assert (ours - ref).abs().max().item() < 1e-4
    assert {r: [int(x) for x in t] for r, t in tokens.items()} == ref_tokens
    # and rank 0's own argmax gives the same greedy tokens
    assert [int(row.argmax()) for step in logits for row in step] == \
        [int(row.argmax()) for step in ref_logits for row in step]


def test_head_ranges_split_and_replicate():
    def ranges(heads, kv, size):
        return [head_ranges(heads, kv, TPShard(r, size, object() if size > 1 else None)) for r in range(size)]
    assert ranges(8, 4, 2) == [((0, 4), (0, 2)), ((4, 8), (2, 4))]
    # 4 ranks over 2 KV heads: ranks 0, 1 keep head 0 (their query heads 0-3), ranks 2, 3 head 1
    assert ranges(8, 2, 4) == [((0, 2), (0, 1)), ((2, 4), (0, 1)), ((4, 6), (1, 2)), ((6, 8), (1, 2))]
    with pytest.raises(ValueError, match="num_attention_heads=6"):
        ranges(6, 2, 4)
    with pytest.raises(ValueError, match="num_key_value_heads=3"):
        ranges(12, 3, 2)


def test_unsharded_family_is_refused_before_loading(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama4_text"}')
    with pytest.raises(ValueError, match=r"tensor_parallel_size=2: Llama4ForCausalLM \(llama4_text\) is not sharded"):
        load_model(tmp_path, shard=TPShard(0, 2, object()))


def test_shard_needs_a_group_and_a_valid_rank():
    with pytest.raises(ValueError, match="process group"):
        TPShard(0, 2)
    with pytest.raises(ValueError, match="rank 2 of size 2"):
        TPShard(2, 2, object())


# -- the real scheduler over rank threads: prefix hits, preemption, Mamba states
def _serve(path, tp: int, budget: int, batches) -> tuple[list[list[list[int]]], object]:
    """One Scheduler + MemoryManager (planned per rank) driving `tp` rank
    threads, rank 0 sampling, as TPExecutor drives processes; each batch
    (token-id prompts, or PreparedPrompts with images) runs to completion.  Returns (tokens per batch in input order, stats)."""
    import queue

    from jenga.engine.sampler import Sampler
    from jenga.memory.manager import MemoryManager
    from jenga.sched.config import SchedulerConfig
    from jenga.sched.params import SamplingParams
    from jenga.sched.request import Request
    from jenga.sched.scheduler import Scheduler

    plan = build_plan(shape_from_config(read_config(path), dtype="float32").per_rank(tp), budget, page_tokens=4)
    store, inbox, results = dist.HashStore(), [queue.Queue() for _ in range(tp)], queue.Queue()

    def rank(r: int) -> None:
        try:
            shard = TPShard(r, tp, dist.ProcessGroupGloo(dist.PrefixStore("s", store), r, tp,
                                                          timedelta(seconds=60))) if tp > 1 else TPShard()
            runner = ModelRunner(load_model(path, shard=shard), KVPool(plan), plan,
                                 sampler=Sampler(seed=0) if r == 0 else None)
            while (step := inbox[r].get()) is not None:
                if isinstance(step, tuple):   # ("inputs", req_id, images), as TPExecutor sends them
                    runner.register_inputs(step[1], step[2])
                elif r == 0:
                    results.put(runner.execute(step))
                else:
                    runner.forget(step.finished)
                    runner.forward(step)
        except BaseException as err:
            results.put(err)

    threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in range(tp)]
    for t in threads:
        t.start()
    manager = MemoryManager(plan, enable_prefix_caching=True, mamba_interval=16)
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=24, mamba_checkpoint_interval=16), manager,
                      max_model_len=512)
    params = SamplingParams(max_tokens=28, temperature=0.0, ignore_eos=True)
    outs = []
    try:
        for b, batch in enumerate(batches):
            tokens = {f"{b}.{i}": [] for i in range(len(batch))}
            for i, p in enumerate(batch):
                rid = f"{b}.{i}"
                if isinstance(p, list):
                    sched.add_request(Request(rid, p, params=params))
                    continue
                sched.add_request(Request(rid, list(p.token_ids), params=params, images=p.images,
                                          cache_salt=p.cache_salt))
                for q in inbox:
                    q.put(("inputs", rid, p.inputs))
            while sched.has_unfinished():
                step = sched.schedule()
                for q in inbox:
                    q.put(step)
                result = results.get(timeout=120)
                if isinstance(result, BaseException):
                    raise result
                for u in sched.update(step, result):
                    tokens[u.req_id].extend(u.new_token_ids)
                manager.check_invariants()
            outs.append([tokens[f"{b}.{i}"] for i in range(len(batch))])
    finally:
        for q in inbox:
            q.put(None)
        for t in threads:
            t.join(timeout=60)
    return outs, sched.stats


HYBRID_BASE = {k: v for k, v in BASE.items() if k != "head_dim"}
HYBRIDS = {
    # mamba, attention+MoE, mamba, attention+MoE
    "jamba": lambda: (tf.JambaForCausalLM, tf.JambaConfig(
        **HYBRID_BASE, num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
        expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=8, mamba_d_conv=4,
        mamba_expand=2, mamba_dt_rank=8)),
    # mamba2, attention, mamba2, attention; 4 heads over d_inner 128, 2 groups of B/C, SSD chunks of 8
    "bamba": lambda: (tf.BambaForCausalLM, tf.BambaConfig(
        **HYBRID_BASE, num_hidden_layers=4, attn_layer_indices=[1, 3], mamba_n_heads=4, mamba_d_state=8,
        mamba_n_groups=2, mamba_d_conv=4, mamba_chunk_size=8, attention_bias=True)),
}


@pytest.mark.parametrize("family", sorted(HYBRIDS))
def test_sharded_hybrid_with_hits_and_preemption_matches_unsharded(family, tmp_path):
    """Jamba (Mamba-1 by d_inner, MoE experts by intermediate size) and
    Bamba (Mamba-2 by heads and groups) at TP=2, conv and SSM states split
    alike, attention by heads, under the real scheduler: a warm-up, then six
    requests sharing 8- and 16-token prefixes that outgrow their pool while
    decoding (preemption); tokens equal TP=1's."""
    hf_cls, cfg = HYBRIDS[family]()
    tiny_checkpoint(hf_cls, cfg, tmp_path)
    g = torch.Generator().manual_seed(3)
    shared = torch.randint(0, 256, (40,), generator=g).tolist()
    prompts = [shared[:n] + torch.randint(0, 256, (k,), generator=g).tolist() for n, k in ((16, 3), (16, 5), (8, 4))]
    batches = [prompts[:1], prompts * 2]
    one_bytes = build_plan(shape_from_config(read_config(tmp_path), dtype="float32"), 1 << 20, page_tokens=4)
    budget = 5 * one_bytes.large_page_bytes   # a few requests' worth: six preempt
    ref, ref_stats = _serve(tmp_path, 1, budget, batches)
    got, stats = _serve(tmp_path, 2, budget // 2, batches)
    assert got == ref
    assert stats.hit_tokens > 0 and stats.num_preemptions > 0
    assert (stats.hit_tokens, stats.num_preemptions) == (ref_stats.hit_tokens, ref_stats.num_preemptions)


def test_bamba_needs_its_groups_to_split():
    from jenga.model.families.bamba import BambaForCausalLM
    _, cfg = HYBRIDS["bamba"]()
    cfg.mamba_n_groups = 1
    with pytest.raises(ValueError, match="mamba_n_groups=1 is not divisible by tensor_parallel_size=2"):
        BambaForCausalLM(cfg, shard=TPShard(0, 2, object()))


def test_sharded_llava_decoder_with_replicated_tower_matches_unsharded(tmp_path):
    """LLaVA at TP=2: the Llama decoder sharded, the CLIP tower and the
    projector replicated on both ranks (each encodes the image into its own
    embedding pages); images reach every rank as TPExecutor sends them.  A
    prompt again hits its image's pages; tokens equal TP=1's."""
    from jenga.engine.vision_inputs import VisionPrompts
    from vlm_helpers import BOS, IMAGE, random_image, tiny_llava
    tiny_llava(tmp_path)
    vision = VisionPrompts(load_model(tmp_path), tmp_path)
    image = random_image(0, 20, 37)
    first = vision.prepare([BOS, 65, 66, IMAGE, 67, 68], [image])
    batches = [[first], [vision.prepare([BOS, 65, 66, IMAGE, 99, 98], [image]), [BOS, 70, 71, 72]]]
    ref, ref_stats = _serve(tmp_path, 1, 1 << 20, batches)
    got, stats = _serve(tmp_path, 2, 1 << 20, batches)
    assert got == ref and stats.hit_tokens == ref_stats.hit_tokens > 0


def test_sharded_mllama_cross_attention_matches_unsharded(tmp_path):
    """mllama at TP=2: self- and cross-attention by heads (each rank writes
    its KV heads of the encoder states into its cross pages), the vision
    tower and projector replicated; the same image again hits; tokens equal
    TP=1's."""
    from jenga.engine.vision_inputs import VisionPrompts
    from vlm_helpers import BOS, IMAGE, random_image, tiny_mllama
    tiny_mllama(tmp_path)
    vision = VisionPrompts(load_model(tmp_path), tmp_path)
    image = random_image(0, 20, 37)
    batches = [[vision.prepare([BOS, IMAGE, 65, 66, 67, 68], [image])],
               [vision.prepare([BOS, IMAGE, 65, 66, 67, 99], [image]), [BOS, 70, 71, 72]]]
    ref, ref_stats = _serve(tmp_path, 1, 1 << 20, batches)
    got, stats = _serve(tmp_path, 2, 1 << 20, batches)
    assert got == ref and stats.hit_tokens == ref_stats.hit_tokens > 0
