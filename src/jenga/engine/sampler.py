"""The sampler: one next token per sampled request from a batch of logits.

It sits after the model runner: row i of the logits belongs to `seqs[i]`,
and each row is sampled with its own `SamplingParams` (greedy, temperature,
top-k, top-p, min_tokens).  Random rows use the exponential-race form of
categorical sampling (argmax of p / E with E ~ Exp(1)), so one vectorised
argmax serves every row.  A request with a seed draws its noise from its own
`torch.Generator`, created on first sight and advanced once per token, so
its samples do not depend on what else shares the batch; unseeded requests
share the engine's generator.  `drop` forgets finished requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..sched.step import SeqStep


class Sampler:
    """Samples next tokens; holds the per-request generators.

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

    # ------------------------------------------------------------ public
    def sample(self, logits: torch.Tensor, seqs: Sequence[SeqStep]) -> list[int]:
        """Return one token id per row of `logits` ([n, vocab]); row i is
        sampled under `seqs[i].params`.  Advances the generators of the
        random rows (seeded ones create theirs on first use).  Raises
        ValueError when the shapes disagree."""
        if logits.dim() != 2 or logits.shape[0] != len(seqs):
            raise ValueError(f"logits must be [len(seqs)={len(seqs)}, vocab], got {tuple(logits.shape)}")
        if not seqs:
            return []
        logits = self._mask_min_tokens(logits.float(), seqs)
        out = torch.empty(len(seqs), dtype=torch.long, device=logits.device)
        greedy = [i for i, s in enumerate(seqs) if s.params.greedy]
        rand = [i for i, s in enumerate(seqs) if not s.params.greedy]
        if greedy:
            out[greedy] = logits[greedy].argmax(dim=-1)
        if rand:
            out[rand] = self._sample_random(logits[rand], [seqs[i] for i in rand])
        return out.tolist()

    def drop(self, req_ids: Iterable[str]) -> None:
        """Forget the generators of finished requests (unknown ids are fine)."""
        for rid in req_ids:
            self._generators.pop(rid, None)

    @property
    def num_generators(self) -> int:
        """How many per-request generators are alive (for tests and leaks)."""
        return len(self._generators)

    # ----------------------------------------------------------- helpers
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
        logits = logits / temps.unsqueeze(1)
        top_k = [s.params.top_k if s.params.top_k > 0 else 0 for s in seqs]
        top_p = [float(s.params.top_p) for s in seqs]
        if any(top_k) or any(p < 1.0 for p in top_p):
            logits = _filter_top_k_top_p(logits, top_k, top_p)
        probs = torch.softmax(logits, dim=-1)
        noise = self._noise(probs.shape, seqs, dev)
        return (probs / noise).argmax(dim=-1)

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
        # a zero draw would turn a masked token's 0/0 into NaN, which argmax picks
        return noise.clamp_(min=1e-30)

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
    covered = in_k | (probs.sum(dim=-1) >= p.squeeze(1)) | (cand == vocab)
    mask = torch.ones_like(logits, dtype=torch.bool).scatter(1, order, drop)
    return mask, covered
