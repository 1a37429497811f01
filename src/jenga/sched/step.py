"""The step boundary: one frozen StepPlan out to a runner, one StepResult back.

Nothing live crosses this line: no request objects, no tensors, only ids,
token ids, positions and page ids.  A simulated runner (sim/) and a torch
runner (engine/) consume the same plan.

Page tables are per group, in plan.groups order:
- token groups (full, sliding, chunked): entry i is the page holding tokens
  [i*page_tokens, (i+1)*page_tokens); NO_PAGE where the page was released
  because no future token needs it (out of window / past chunk);
- mamba: one entry, the page holding the running state;
- cross: the pages of the encoder tokens, images in order;
- vision: the pages of each image's embeddings, images in order, each image
  starting on a fresh page; NO_PAGE for images whose embeddings are gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ..memory.types import ImageRef
from .params import SamplingParams

NO_PAGE = -1


class StateSave(NamedTuple):
    """Write group `gid`'s recurrent state as it is after `position` tokens
    into page `page` (a prefix-cache checkpoint); start < position <= end."""

    gid: int
    position: int
    page: int


class PageCopy(NamedTuple):
    """Copy small page `src` of group `gid` onto `dst` before the forward."""

    gid: int
    src: int
    dst: int


class SeqStep(NamedTuple):
    """One request's share of a step (a NamedTuple: immutable like the
    frozen dataclasses, but built per request per step, and a NamedTuple
    costs a quarter of a frozen dataclass to create).

    token_ids are computed at positions start .. start+len-1; `start` tokens
    are already in the pool.  `sample` is True when the step reaches the end
    of the request's known tokens, so the runner samples the next token.
    `prompt_len` and `images` let the runner find image spans and encoder
    tokens; `encoder_runs` lists the images whose encoder runs this step
    (their outputs go to the vision or cross pages).  With speculative
    decoding the last `num_spec` tokens are draft proposals: the runner
    verifies them (sampling at each of the last num_spec+1 positions),
    returns the accepted tokens plus one, and proposes the next drafts.
    """

    req_id: str
    token_ids: tuple[int, ...]
    start: int
    page_tables: tuple[tuple[int, ...], ...]
    sample: bool
    params: SamplingParams
    prompt_len: int
    images: tuple[ImageRef, ...] = ()
    encoder_runs: tuple[int, ...] = ()
    state_saves: tuple[StateSave, ...] = ()
    num_spec: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def end(self) -> int:
        return self.start + len(self.token_ids)


@dataclass(frozen=True)
class StepPlan:
    """Everything a runner needs for one forward step.

    copies and zeros are applied (in that order) before the forward; zeros
    hold (gid, page) pairs of fresh recurrent-state pages.  `finished` lists
    requests that ended or were preempted since the last plan, so a runner
    can drop per-request state (sampler generators, encoder outputs).
    """

    step_id: int
    seqs: tuple[SeqStep, ...]
    copies: tuple[PageCopy, ...] = ()
    zeros: tuple[tuple[int, int], ...] = ()
    finished: tuple[str, ...] = ()

    @property
    def num_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.seqs)

    @property
    def empty(self) -> bool:
        """Nothing for a runner to do: no seqs and no page operations (a
        step whose requests were all preempted may still move pages)."""
        return not self.seqs and not self.copies and not self.zeros


class TokenLogprobs(NamedTuple):
    """The log-probabilities of one sampled token (the model's own
    distribution, before temperature, penalties or masks, as vLLM reports
    by default): its logprob, its rank (1 = most likely), and the `top`
    (token id, logprob) pairs the request asked for, most likely first."""

    token_id: int
    logprob: float
    rank: int
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class StepResult:
    """What the runner returns: sampled token ids per request that had
    `sample` set (one token, or several when a draft model's proposals were
    accepted), how long the step took (measured or simulated), and the draft
    model's proposals for each request's next step.  `logprobs` holds, for
    requests whose params ask for them, one TokenLogprobs per sampled token."""

    sampled: dict[str, tuple[int, ...]]
    duration_s: float = 0.0
    encoder_runs: int = 0
    draft_tokens: dict[str, tuple[int, ...]] = field(default_factory=dict)
    logprobs: dict[str, tuple[TokenLogprobs, ...]] = field(default_factory=dict)
