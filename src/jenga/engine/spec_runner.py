"""SpecRunner: one speculative-decoding step with a target and a draft model.

Both models live in one KV pool and one plan (the draft's groups are tagged
"draft", see spec_shape.py).  The scheduler hands a decode seq as [last real
token, d1..ds] with `num_spec = s`; one step then

1. runs the TARGET over every scheduled token and samples at each of the
   last s+1 positions; d_i is accepted while it equals the target's sample
   at the position before it, and the seq gets the accepted drafts plus the
   target's token at the first mismatch (or the bonus token after d_s);
2. runs the DRAFT over the tokens this step commits (prompt chunks, the
   accepted part of the verify window) plus the newly sampled token, so its
   KV always covers exactly what the target has committed, then proposes k
   tokens greedily, one single-token draft forward each after the first.

Verification samples with the ordinary Sampler, so it is exact for every
request, not only greedy ones: the draft is greedy (a point mass on d_i),
and for a point-mass proposal standard rejection sampling reduces to "draw
x ~ p_target; accept d_i iff x == d_i, else emit x", since x given x != d_i
is the residual distribution norm(max(0, p - q)).  Random rows are drawn
one position per round and only while the seq is still accepting, so a
seeded request consumes one draw per output token, as without speculation,
and gives the same tokens.  Rejected positions' KV is simply overwritten
later.  SpecRunner is an executor (sched/executor.py): `execute` returns
the StepResult with the proposals in `draft_tokens` and the target's
encoder runs counted.  A recurrent (Mamba) state could not be rolled back past the
draft's own proposals, so a draft must be attention-only; a recurrent
target needs ModelRunner to write the plan's state_saves (one state after
each draft token, which the manager adopts on rejection).
"""

from __future__ import annotations

import time

import torch

from ..sched.step import SeqStep, StepPlan, StepResult
from .runner import ModelRunner
from .sampler import Sampler


def accept(drafts: tuple[int, ...], samples: list[int]) -> tuple[int, ...]:
    """The verified tokens: samples[i] for i = 0.. while sample i equals
    draft i, ending with the first sample that differs (or the bonus sample
    after the last draft).  `samples` may stop at the first mismatch."""
    out = []
    for i, tok in enumerate(samples):
        out.append(tok)
        if i >= len(drafts) or tok != drafts[i]:
            break
    return tuple(out)


class SpecRunner:
    """Verify with `target`, propose with `draft`; see module doc.

    Raises ValueError when the runners do not share one pool and plan, when
    the draft's layers overlap the target's, when the draft keeps state
    other than attention K/V, when the vocabularies differ, or when
    num_speculative_tokens < 1.
    """

    def __init__(self, target: ModelRunner, draft: ModelRunner, sampler: Sampler,
                 num_speculative_tokens: int) -> None:
        if target.kv_pool is not draft.kv_pool or target.plan is not draft.plan:
            raise ValueError("target and draft runners must share one KV pool and plan")
        if set(target.plan_layers) & set(draft.plan_layers):
            raise ValueError(f"draft plan layers {draft.plan_layers} overlap the target's; "
                             "place the draft with layer_offset")
        if target.model.arch.vocab_size != draft.model.arch.vocab_size:
            raise ValueError(f"speculative_model has vocab_size {draft.model.arch.vocab_size}, "
                             f"the target {target.model.arch.vocab_size}; they must share a vocabulary")
        if not isinstance(num_speculative_tokens, int) or num_speculative_tokens < 1:
            raise ValueError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens!r}")
        # the draft's proposals run past the verified length; only K/V, which
        # later writes overwrite, may hold them (a recurrent state cannot)
        stateful = sorted(layer for g in target.plan.groups for layer in g.layers
                          if layer >= draft.layer_offset and layer not in draft.plan_layers)
        if stateful:
            raise ValueError(f"draft plan layers {stateful} keep state other than attention K/V; "
                             "a draft must be attention-only")
        self.target, self.draft, self.sampler, self.k = target, draft, sampler, num_speculative_tokens
        pool = target.kv_pool
        gids = sorted({pool.group_of(layer) for layer in draft.plan_layers})
        self._draft_groups = [(g, target.plan.groups[g].page_tokens) for g in gids]

    def execute(self, step: StepPlan) -> StepResult:
        """Run the step (target, then draft); mutates the pool and advances
        the sampler's generators.  `sampled` holds the accepted drafts plus
        one token per sampled seq, `draft_tokens` the draft's next proposals
        (fewer than k, or none, where the page tables or max_tokens leave no
        room).  Raises ValueError as ModelRunner does."""
        t0 = time.perf_counter()
        self.forget(step.finished)
        out = self.target.forward(step, verify=True)
        if not step.seqs:   # page operations only (or nothing)
            return StepResult({}, time.perf_counter() - t0)
        by_id = {s.req_id: s for s in step.seqs}
        seqs = [by_id[r] for r in out.req_ids]
        sampled = self._verify(seqs, out.logits)
        drafts = self._propose(step, sampled)
        return StepResult(sampled, time.perf_counter() - t0, out.encoder_runs, draft_tokens=drafts)

    def register_inputs(self, req_id: str, inputs) -> None:
        """Images go to the target (a draft is text-only)."""
        self.target.register_inputs(req_id, inputs)

    def forget(self, req_ids) -> None:
        """Drop ended requests' state (the shared sampler's generators, the target's images)."""
        if req_ids:
            self.sampler.drop(req_ids)
            self.target.forget(req_ids)

    def close(self) -> None:
        self.target.close()
        self.draft.close()

    # ------------------------------------------------------------ verify
    def _verify(self, seqs: list[SeqStep], logits: torch.Tensor) -> dict[str, tuple[int, ...]]:
        first, row = [], 0
        for s in seqs:
            first.append(row)
            row += s.num_spec + 1
        samples: dict[str, list[int]] = {s.req_id: [] for s in seqs}
        # greedy rows use no randomness: sample every position at once
        greedy = [(s, r) for s, r in zip(seqs, first) if s.params.greedy]
        if greedy:
            rows = [r + i for s, r in greedy for i in range(s.num_spec + 1)]
            toks = self.sampler.sample(logits[rows], [_at(s, i) for s, _ in greedy for i in range(s.num_spec + 1)])
            it = iter(toks)
            for s, _ in greedy:
                samples[s.req_id] = [next(it) for _ in range(s.num_spec + 1)]
        # random rows: one position per round, only while still accepting
        alive = [(s, r) for s, r in zip(seqs, first) if not s.params.greedy]
        i = 0
        while alive:
            toks = self.sampler.sample(logits[[r + i for _, r in alive]], [_at(s, i) for s, _ in alive])
            nxt = []
            for (s, r), tok in zip(alive, toks):
                samples[s.req_id].append(tok)
                if i < s.num_spec and tok == _drafts(s)[i]:
                    nxt.append((s, r))
            alive, i = nxt, i + 1
        return {s.req_id: accept(_drafts(s), samples[s.req_id]) for s in seqs}

    # ----------------------------------------------------------- propose
    def _capacity(self, s: SeqStep) -> int:
        """Positions the seq's draft page tables cover (lookahead included)."""
        return min(len(s.page_tables[g]) * P for g, P in self._draft_groups)

    def _propose(self, step: StepPlan, sampled: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        catch_up, want = [], {}
        for s in step.seqs:
            tokens = s.token_ids
            if s.sample:
                tokens = s.token_ids[:s.num_tokens - s.num_spec] + sampled[s.req_id]
                new_pos = s.start + len(tokens) - 1       # the token the target just sampled
                n = min(self.k, self._capacity(s) - new_pos)
                if s.end - s.num_spec - s.prompt_len + len(sampled[s.req_id]) >= s.params.max_tokens:
                    n = 0                                 # the request ends this step
                if n > 0:
                    want[s.req_id] = (n, new_pos)
                else:
                    tokens = tokens[:-1]                  # no page for it, or no use: left to next step
            catch_up.append(SeqStep(s.req_id, tokens, s.start, s.page_tables, s.req_id in want, s.params,
                                    s.prompt_len))
        out = self.draft.forward(StepPlan(step.step_id, tuple(catch_up)))
        proposals = {r: [t] for r, t in zip(out.req_ids, out.logits.argmax(dim=-1).tolist())}
        by_id = {s.req_id: s for s in step.seqs}
        for j in range(1, max((n for n, _ in want.values()), default=0)):
            run = [SeqStep(r, (proposals[r][-1],), pos + j, by_id[r].page_tables, True, by_id[r].params,
                           by_id[r].prompt_len) for r, (n, pos) in want.items() if n > j]
            out = self.draft.forward(StepPlan(step.step_id, tuple(run)))
            for r, t in zip(out.req_ids, out.logits.argmax(dim=-1).tolist()):
                proposals[r].append(t)
        return {r: tuple(p) for r, p in proposals.items()}


def _drafts(s: SeqStep) -> tuple[int, ...]:
    return s.token_ids[s.num_tokens - s.num_spec:] if s.num_spec else ()


def _at(s: SeqStep, i: int) -> SeqStep:
    """The seq as the sampler should see verify position i: i drafts are
    then outputs, which is what min_tokens counts."""
    return s._replace(num_spec=s.num_spec - i)
