"""Logits processing for the sampler: sanitising, logit bias, penalties,
min-p and log-probabilities.  Pure functions over a [rows, vocab] float32
tensor; each returns a new tensor and never modifies its input.

The order is vLLM's: bias and penalties on the model's logits, then (in the
sampler) temperature, min-p, top-k/top-p.  Log-probabilities are the
model's own distribution (vLLM's default "raw" logprobs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..sched.params import SamplingParams
from ..sched.step import TokenLogprobs


def sanitize(logits: torch.Tensor) -> torch.Tensor:
    """A float32 copy in which NaN is -inf (never sampled) and +inf the
    largest finite float (so an infinite logit wins, without inf - inf).
    Raises ValueError for a row with no finite logit left: the model
    produced garbage, and a token drawn from it would be junk."""
    out = torch.nan_to_num(logits.float(), nan=float("-inf"), posinf=torch.finfo(torch.float32).max,
                           neginf=float("-inf"))
    dead = ~out.isfinite().any(dim=1)
    if bool(dead.any()):
        rows = dead.nonzero().flatten().tolist()
        raise ValueError(f"logits rows {rows[:5]} hold no finite value (NaN or -inf everywhere)")
    return out


def apply_logit_bias(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Add each row's logit_bias (ids beyond the vocabulary are ignored;
    the engine refuses them at add_request)."""
    rows = [i for i, p in enumerate(params) if p.logit_bias]
    if not rows:
        return logits
    out, vocab = logits.clone(), logits.shape[1]
    for i in rows:
        pairs = [(t, b) for t, b in params[i].logit_bias.items() if t < vocab]
        if pairs:
            ids = torch.tensor([t for t, _ in pairs], device=logits.device)
            out[i, ids] += torch.tensor([b for _, b in pairs], device=logits.device)
    return out


def apply_penalties(logits: torch.Tensor, params: Sequence[SamplingParams], outputs: Sequence[Sequence[int]],
                    prompts: Sequence[Sequence[int]]) -> torch.Tensor:
    """vLLM's penalties per row: repetition_penalty on every token of the
    prompt or output (positive logits divided, negative multiplied), then
    frequency_penalty x count and presence_penalty once, for output tokens."""
    rows = [i for i, p in enumerate(params) if p.has_penalties]
    if not rows:
        return logits
    out, (_, vocab), dev = logits.clone(), logits.shape, logits.device
    for i in rows:
        p, row = params[i], out[i]
        counts = torch.bincount(torch.tensor(list(outputs[i]), dtype=torch.long, device=dev), minlength=vocab)[:vocab]
        if p.repetition_penalty != 1.0:
            seen = counts > 0
            if prompts[i]:
                seen[torch.tensor([t for t in prompts[i] if 0 <= t < vocab], dtype=torch.long, device=dev)] = True
            pen = torch.where(row > 0, row / p.repetition_penalty, row * p.repetition_penalty)
            row = torch.where(seen, pen, row)
        row = row - p.frequency_penalty * counts.float() - p.presence_penalty * (counts > 0).float()
        out[i] = row
    return out


def apply_min_p(scaled: torch.Tensor, min_p: Sequence[float]) -> torch.Tensor:
    """Drop tokens whose probability is below min_p x the top token's.
    `scaled` rows have their maximum at 0 (the sampler shifts them), so a
    token's probability ratio to the top is exp(logit) and the test is
    logit < log(min_p); the top token (0) always survives."""
    if not any(m > 0.0 for m in min_p):
        return scaled
    thresh = torch.tensor([float(torch.log(torch.tensor(m))) if m > 0 else float("-inf") for m in min_p],
                          device=scaled.device).unsqueeze(1)
    return scaled.masked_fill(scaled < thresh, float("-inf"))


def token_logprobs(logits: torch.Tensor, tokens: Sequence[int], num_top: Sequence[int]) -> list[TokenLogprobs]:
    """For each row: the chosen token's logprob and rank under
    log_softmax(logits), and the num_top[i] most likely (id, logprob)."""
    logp = logits.log_softmax(dim=-1)
    chosen = torch.tensor(list(tokens), dtype=torch.long, device=logits.device).unsqueeze(1)
    values = logp.gather(1, chosen)
    ranks = (logp > values).sum(dim=1) + 1
    k = min(max(num_top, default=0), logits.shape[1])
    top_v, top_i = logp.topk(k, dim=-1) if k else (None, None)
    out = []
    for i, (tok, n) in enumerate(zip(tokens, num_top)):
        top = tuple(zip(top_i[i, :n].tolist(), top_v[i, :n].tolist())) if n else ()
        out.append(TokenLogprobs(int(tok), float(values[i, 0]), int(ranks[i]), top))
    return out
