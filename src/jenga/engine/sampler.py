"""The sampler: one next token per sampled request from a batch of logits.

It sits after the model runner: row i of the logits belongs to `seqs[i]`,
and each row is sampled with its own `SamplingParams`.  In order (vLLM's):
NaN/inf are made harmless (sampler_ops.sanitize), min_tokens masks eos and
stop ids, logit_bias and the repetition/frequency/presence penalties apply;
greedy rows (temperature below 1e-5) take the argmax; random rows are
shifted to a maximum of 0 and divided by their temperature (so no value
overflows), then min-p, top-k and top-p masks keep at least the top token,
and the token is drawn by the exponential race in log space:
argmax(log p - log E), E ~ Exp(1), one vectorised argmax for every row.
A request with a seed draws its noise from its own `torch.Generator`,
created on first sight and advanced once per token, so its samples do not
depend on what else shares the batch; unseeded requests share the engine's
generator.  Penalties need the tokens a request has seen: output tokens are
read from the seqs by position (every output token is fed back in a later
sampled step, drafts included, and re-fed positions overwrite), prompt
tokens are given once by `add_prompt`.  `drop` forgets finished requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..sched.step import SeqStep, TokenLogprobs
from .sampler_ops import apply_logit_bias, apply_min_p, apply_penalties, sanitize, token_logprobs


class Sampler:
    """Samples next tokens; holds the per-request generators and, for
    requests with penalties, the tokens they have seen.

    eos_token_ids: tokens masked (besides each request's stop_token_ids)
        while a request has produced fewer than `min_tokens` tokens, unless
        it sets `ignore_eos`.
    seed: seeds the generator shared by requests without their own seed.
    """

    def __init__(self, eos_token_ids: Iterable[int] = (), seed: int = 0) -> None:
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        self.seed = seed
        self._shared: dict[torch.device, torch.Generator] = {}
        self._generators: dict[str, torch.Generator] = {}
        self._outputs: dict[str, list[int]] = {}       # output tokens by position - prompt_len
        self._prompts: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------ public
    def sample(self, logits: torch.Tensor, seqs: Sequence[SeqStep]) -> list[int]:
        """Return one token id per row of `logits` ([n, vocab]); row i is
        sampled under `seqs[i].params`.  Advances the generators of the
        random rows (seeded ones create theirs on first use).  Raises
        ValueError when the shapes disagree or a row has no finite logit."""
        return self.sample_with_logprobs(logits, seqs)[0]

    def sample_with_logprobs(self, logits: torch.Tensor, seqs: Sequence[SeqStep]
                             ) -> tuple[list[int], list[TokenLogprobs | None]]:
        """`sample`, plus for each row whose params set `logprobs` the
        sampled token's TokenLogprobs (None for the other rows)."""
        if logits.dim() != 2 or logits.shape[0] != len(seqs):
            raise ValueError(f"logits must be [len(seqs)={len(seqs)}, vocab], got {tuple(logits.shape)}")
        if not seqs:
            return [], []
        raw = sanitize(logits)
        params = [s.params for s in seqs]
        proc = apply_logit_bias(self._mask_min_tokens(raw, seqs), params)
        if any(p.has_penalties for p in params):
            outputs = [self._seen_outputs(s) if s.params.has_penalties else () for s in seqs]
            prompts = [self._prompts.get(s.req_id, ()) for s in seqs]
            proc = apply_penalties(proc, params, outputs, prompts)
        # masks never leave a row empty: the row falls back to its model logits
        empty = ~proc.isfinite().any(dim=1)
        if bool(empty.any()):
            proc = torch.where(empty.unsqueeze(1), raw, proc)
        out = torch.empty(len(seqs), dtype=torch.long, device=logits.device)
        greedy = [i for i, p in enumerate(params) if p.greedy]
        rand = [i for i, p in enumerate(params) if not p.greedy]
        if greedy:
            out[greedy] = proc[greedy].argmax(dim=-1)
        if rand:
            out[rand] = self._sample_random(proc[rand], [seqs[i] for i in rand])
        tokens = out.tolist()
        want = [i for i, p in enumerate(params) if p.logprobs is not None]
        logprobs: list[TokenLogprobs | None] = [None] * len(seqs)
        if want:
            rows = token_logprobs(raw[want], [tokens[i] for i in want], [params[i].logprobs for i in want])
            for i, lp in zip(want, rows):
                logprobs[i] = lp
        return tokens, logprobs

    def add_prompt(self, req_id: str, prompt_token_ids: Sequence[int]) -> None:
        """Remember a request's prompt, which its repetition_penalty covers
        (cached and unsampled prefill chunks never reach the sampler)."""
        self._prompts[req_id] = tuple(prompt_token_ids)

    def drop(self, req_ids: Iterable[str]) -> None:
        """Forget the state of finished requests (unknown ids are fine)."""
        for rid in req_ids:
            self._generators.pop(rid, None)
            self._outputs.pop(rid, None)
            self._prompts.pop(rid, None)

    @property
    def num_generators(self) -> int:
        """How many per-request generators are alive (for tests and leaks)."""
        return len(self._generators)

    @property
    def num_tracked(self) -> int:
        """How many requests have remembered tokens (for tests and leaks)."""
        return len(set(self._outputs) | set(self._prompts))

    # ----------------------------------------------------------- helpers
    def _seen_outputs(self, s: SeqStep) -> list[int]:
        """Record the output tokens this seq carries (positions >=
        prompt_len, drafts included: positions re-fed later overwrite them)
        and return the request's outputs before the sampled position.
        Raises ValueError when an earlier output was never seen."""
        hist = self._outputs.setdefault(s.req_id, [])
        lo = max(s.start, s.prompt_len) - s.prompt_len
        if lo > len(hist):
            raise ValueError(f"request {s.req_id!r}: the sampler missed its output tokens before position "
                             f"{s.start} (penalties need every output token)")
        del hist[lo:]
        hist.extend(s.token_ids[max(0, s.prompt_len - s.start):])
        return hist[:s.end - s.num_spec - s.prompt_len]

    def _mask_min_tokens(self, logits: torch.Tensor, seqs: Sequence[SeqStep]) -> torch.Tensor:
        """Return logits with the eos/stop tokens of rows still short of
        min_tokens set to -inf (a copy when anything changes: the caller's
        tensor is never modified).  A row's output count is the tokens
        known past the prompt (draft proposals excluded)."""
        vocab = logits.shape[1]
        copied = False
        for i, s in enumerate(seqs):
            p = s.params
            if p.min_tokens == 0 or s.end - s.num_spec - s.prompt_len >= p.min_tokens:
                continue
            banned = set(p.stop_token_ids)
            if not p.ignore_eos:
                banned.update(self.eos_token_ids)
            ids = [t for t in banned if 0 <= t < vocab]
            if ids:
                if not copied:
                    logits, copied = logits.clone(), True
                logits[i, ids] = float("-inf")
        return logits

    def _sample_random(self, logits: torch.Tensor, seqs: Sequence[SeqStep]) -> torch.Tensor:
        dev = logits.device
        temps = torch.tensor([s.params.temperature for s in seqs], dtype=torch.float32, device=dev)
        # shift to a maximum of 0 first: dividing by a small temperature cannot overflow
        logits = (logits - logits.max(dim=-1, keepdim=True).values) / temps.unsqueeze(1)
        logits = apply_min_p(logits, [s.params.min_p for s in seqs])
        top_k = [s.params.top_k if s.params.top_k > 0 else 0 for s in seqs]
        top_p = [float(s.params.top_p) for s in seqs]
        if any(top_k) or any(p < 1.0 for p in top_p):
            logits = _filter_top_k_top_p(logits, top_k, top_p)
        # log space: a kept token's log-probability is finite even when its probability underflows
        logp = torch.log_softmax(logits, dim=-1)
        noise = self._noise(logp.shape, seqs, dev)
        return (logp - noise.log()).argmax(dim=-1)

    def _noise(self, shape: torch.Size, seqs: Sequence[SeqStep], dev: torch.device) -> torch.Tensor:
        """Exp(1) noise, one row per seq: seeded rows from their own
        generator (so a row's noise is the same alone or batched)."""
        noise = torch.empty(shape, dtype=torch.float32, device=dev)
        unseeded = [i for i, s in enumerate(seqs) if s.params.seed is None]
        if unseeded:
            shared = self._shared_generator(dev)
            noise[unseeded] = torch.empty((len(unseeded), shape[1]), device=dev).exponential_(generator=shared)
        for i, s in enumerate(seqs):
            if s.params.seed is not None:
                noise[i].exponential_(generator=self._generator(s, dev))
        # keep log(E) finite: a zero or infinite draw would tie a kept token with a masked one
        return noise.clamp_(min=1e-30, max=1e30)

    def _generator(self, s: SeqStep, dev: torch.device) -> torch.Generator:
        gen = self._generators.get(s.req_id)
        if gen is None:
            gen = torch.Generator(device=dev)
            gen.manual_seed(int(s.params.seed))
            self._generators[s.req_id] = gen
        return gen

    def _shared_generator(self, dev: torch.device) -> torch.Generator:
        gen = self._shared.get(dev)
        if gen is None:
            gen = torch.Generator(device=dev)
            gen.manual_seed(self.seed)
            self._shared[dev] = gen
        return gen


def _filter_top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """Return logits with every token outside each row's top-k and top-p
    nucleus set to -inf (top_k 0 and top_p 1.0 keep everything).  The
    nucleus is the smallest set of most likely tokens whose probability
    (after top-k) reaches top_p; the most likely token is always kept.

    A full sort of the vocabulary costs more than the rest of sampling, so
    only the best CANDIDATES tokens are sorted; rows whose top-k or nucleus
    does not fit in them (flat distributions) are redone with a full sort.
    """
    rows = [i for i, (k, p) in enumerate(zip(top_k, top_p)) if k > 0 or p < 1.0]
    vocab = logits.shape[1]
    ks, ps = [top_k[i] for i in rows], [top_p[i] for i in rows]
    cand = min(vocab, max(CANDIDATES, *ks))
    mask, covered = _outside_nucleus(logits[rows], ks, ps, cand)
    if not bool(covered.all()):
        redo = [j for j, ok in enumerate(covered.tolist()) if not ok]
        mask[redo] = _outside_nucleus(logits[[rows[j] for j in redo]], [ks[j] for j in redo],
                                      [ps[j] for j in redo], vocab)[0]
    out = logits.clone()
    out[rows] = logits[rows].masked_fill(mask, float("-inf"))
    return out


CANDIDATES = 256


def _outside_nucleus(logits: torch.Tensor, top_k: list[int], top_p: list[float],
                     cand: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool mask of the tokens to drop, looking only at the `cand` most
    likely tokens of each row (all others dropped), and whether that was
    exact per row: the row's top-k, or its nucleus, lies within them."""
    dev, vocab = logits.device, logits.shape[1]
    vals, order = logits.topk(cand, dim=-1)     # sorted, most likely first
    k = torch.tensor([t if t > 0 else vocab for t in top_k], device=dev).unsqueeze(1)
    drop = torch.arange(cand, device=dev).unsqueeze(0) >= k
    in_k = (k <= cand).squeeze(1)
    # normaliser: over the kept top-k where it is within the candidates, else the whole vocabulary
    norm = torch.where(in_k, vals.masked_fill(drop, float("-inf")).logsumexp(dim=-1), logits.logsumexp(dim=-1))
    probs = (vals - norm.unsqueeze(1)).exp().masked_fill(drop, 0.0)
    # top_p 1.0 must keep all: rounding can push the cumsum to 1 early
    p = torch.tensor([t if t < 1.0 else float("inf") for t in top_p], device=dev).unsqueeze(1)
    before = probs.cumsum(dim=-1) - probs      # mass strictly before each token
    drop |= before >= p
    drop[:, 0] = False                         # the top token survives (a top_p of 1e-300 is 0.0 in float32)
    covered = in_k | (probs.sum(dim=-1) >= p.squeeze(1)) | (cand == vocab)
    mask = torch.ones_like(logits, dtype=torch.bool).scatter(1, order, drop)
    return mask, covered
