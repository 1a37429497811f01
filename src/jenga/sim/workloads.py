"""Seeded workload generators: the paper's request mixes as TraceRequests.

Every generator takes the number of requests, an arrival `rate` (requests/s,
Poisson; `inf` puts every arrival at 0, as the paper's throughput runs did),
a `seed` (same seed, same requests), and `vocab_size`.  Prompts are built
from named segments (see trace.py), so what is shared in the real workload
(a document, a few-shot prefix, earlier turns) shares token ids here and can
hit the prefix cache, and everything else is unique.  Lengths follow the
distributions described in docs/trace-format.md; the defaults mirror the
paper artifact's runs (output lengths 200 for MMMU-pro, 150 for arXiv-QA).

Images: decoder-only VLMs (LLaVA; a `vision` pseudo-layer) hold one
placeholder token per image token in the prompt (`inline_images=True`);
cross-attention models (mllama) hold one placeholder token and the image
becomes encoder tokens (`inline_images=False`).  `inline_images_for(shape)`
says which a model needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..memory.policies import policy_for
from ..memory.spec import ModelShape
from ..memory.types import ImageRef
from .runner import DEFAULT_VOCAB, sim_token
from .trace import Segment, TraceRequest, expand

OutputLen = int | tuple[int, int]


def inline_images_for(shape: ModelShape) -> bool:
    """True when the model keeps image tokens in the sequence (it has a
    vision-embedding pseudo-layer), False when images are encoder tokens."""
    return any(not policy_for(spec.kind).decoder_layer for spec in shape.layers)


def arrivals(n: int, rate: float, seed: int | list[int]) -> list[float]:
    """`n` Poisson arrival times at `rate` per second (the first after one
    gap from 0); all 0 when rate is infinite.  Arrivals have their own random
    stream, so the requests' lengths do not depend on the rate.  Raises
    ValueError naming `rate` if it is not > 0."""
    if not rate > 0:
        raise ValueError(f"rate must be > 0 (inf: all at once), got {rate!r}")
    if math.isinf(rate):
        return [0.0] * n
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1.0 / rate, size=n)).tolist()


def _lognormal(rng: np.random.Generator, n: int, median: float, sigma: float, lo: int, hi: int) -> list[int]:
    return np.clip(np.round(rng.lognormal(math.log(median), sigma, size=n)), lo, hi).astype(int).tolist()


def _outputs(rng: np.random.Generator, n: int, output_len: OutputLen) -> list[int]:
    if isinstance(output_len, int):
        if output_len < 1:
            raise ValueError(f"output_len must be >= 1, got {output_len}")
        return [output_len] * n
    lo, hi = output_len
    if not 1 <= lo <= hi:
        raise ValueError(f"output_len range must satisfy 1 <= lo <= hi, got {output_len!r}")
    return rng.integers(lo, hi + 1, size=n).tolist()


def _check(num_requests: int) -> None:
    if not isinstance(num_requests, int) or num_requests < 1:
        raise ValueError(f"num_requests must be a positive integer, got {num_requests!r}")


def _request(t: float, segments: list[Segment], out: int, vocab: int, req_id: str,
             images: tuple[ImageRef, ...] = ()) -> TraceRequest:
    segs = tuple(segments)
    return TraceRequest(t, expand(segs, vocab), out, images, req_id=req_id, segments=segs)


# ------------------------------------------------------------ workloads
def mmmu_pro(num_requests: int, *, rate: float = math.inf, seed: int = 0, text_tokens: int = 43,
             image_tokens: int = 6193, image_tokens_std: float = 150.0, output_len: OutputLen = 200,
             inline_images: bool = False, vocab_size: int = DEFAULT_VOCAB) -> list[TraceRequest]:
    """One image (~N(image_tokens, std) tokens, never shared) and ~text_tokens
    of question per request; the image sits at position 0..4."""
    _check(num_requests)
    rng = np.random.default_rng([seed, 1])
    times = arrivals(num_requests, rate, [seed, 1, 0])
    texts = np.clip(np.round(rng.normal(text_tokens, text_tokens / 5, num_requests)), 2, None).astype(int)
    n_img = np.clip(np.round(rng.normal(image_tokens, image_tokens_std, num_requests)), 1, None).astype(int)
    outs = _outputs(rng, num_requests, output_len)
    reqs = []
    for i in range(num_requests):
        text, pos, h = int(texts[i]), int(rng.integers(0, 5)), f"mmmu-{seed}-{i}"
        pos = min(pos, text - 1)
        placeholder = int(n_img[i]) if inline_images else 1
        segs = [Segment(f"mmmu-{seed}-{i}-text", pos), Segment(f"image:{h}", placeholder),
                Segment(f"mmmu-{seed}-{i}-text-b", text - pos)]
        segs = [s for s in segs if s.length]
        reqs.append(_request(times[i], segs, outs[i], vocab_size, f"mmmu-{seed}-{i}",
                             (ImageRef(pos, int(n_img[i]), h),)))
    return reqs


def arxiv_qa(num_requests: int, *, rate: float = math.inf, seed: int = 0, questions_per_doc: int = 4,
             doc_median: int = 30000, doc_sigma: float = 0.6, min_doc: int = 1000, max_doc: int = 110000,
             article_median: int | None = None, articles_per_doc: Sequence[int] = (),
             question_tokens: tuple[int, int] = (15, 60), output_len: OutputLen = (100, 200),
             shuffle: bool = True, vocab_size: int = DEFAULT_VOCAB) -> list[TraceRequest]:
    """Questions about long documents: each document (lognormal length,
    clipped to [min_doc, max_doc]) is a shared segment asked
    `questions_per_doc` questions.  With `article_median`, a document is
    instead consecutive articles (lognormal lengths around that median,
    sigma `doc_sigma`) concatenated while the total stays within `max_doc`,
    as the paper artifact builds its arXiv prompts (so documents sit just
    under `max_doc`).  With `articles_per_doc` too, document d is exactly
    articles_per_doc[d] articles (cycled), cut to `max_doc` (the artifact's
    fixed article groups when it sets no --hf-max-len).  `shuffle`
    interleaves the documents' questions; otherwise they come document by
    document."""
    _check(num_requests)
    if questions_per_doc < 1 or not 1 <= min_doc <= max_doc:
        raise ValueError("questions_per_doc must be >= 1 and 1 <= min_doc <= max_doc")
    if article_median is not None and article_median < 1:
        raise ValueError(f"article_median must be >= 1, got {article_median!r}")
    if articles_per_doc and (article_median is None or min(articles_per_doc) < 1):
        raise ValueError("articles_per_doc needs article_median and counts >= 1")
    rng = np.random.default_rng([seed, 2])
    num_docs = -(-num_requests // questions_per_doc)
    if article_median is None:
        docs = _lognormal(rng, num_docs, doc_median, doc_sigma, min_doc, max_doc)
    elif articles_per_doc:
        counts = [articles_per_doc[d % len(articles_per_doc)] for d in range(num_docs)]
        docs = [min(max_doc, sum(_lognormal(rng, k, article_median, doc_sigma, 1, max_doc))) for k in counts]
    else:
        docs = [_packed_articles(rng, article_median, doc_sigma, max_doc) for _ in range(num_docs)]
    order = list(range(num_requests))
    if shuffle:
        rng.shuffle(order)
    times = arrivals(num_requests, rate, [seed, 2, 0])
    q_lens = rng.integers(question_tokens[0], question_tokens[1] + 1, size=num_requests).tolist()
    outs = _outputs(rng, num_requests, output_len)
    reqs = []
    for slot, k in enumerate(order):
        d = k // questions_per_doc
        segs = [Segment(f"arxiv-{seed}-doc{d}", docs[d]), Segment(f"arxiv-{seed}-q{k}", q_lens[k])]
        reqs.append(_request(times[slot], segs, outs[k], vocab_size, f"arxiv-{seed}-d{d}-q{k}"))
    return reqs


def _packed_articles(rng: np.random.Generator, median: int, sigma: float, limit: int) -> int:
    """Total length of consecutive articles concatenated while the sum stays
    within `limit` (the first article is cut to `limit` if it alone is longer)."""
    total = 0
    while True:
        article = max(1, int(round(rng.lognormal(math.log(median), sigma))))
        if total + article > limit:
            return total or limit
        total += article


def mmlu_pro(num_requests: int, *, rate: float = math.inf, seed: int = 0, shared_prefix_len: int = 100,
             num_prefixes: int = 1, prompt_len: tuple[int, int] = (200, 1000), output_len: OutputLen = 20,
             vocab_size: int = DEFAULT_VOCAB) -> list[TraceRequest]:
    """Short prompts (uniform in `prompt_len`, prefix included) that open
    with one of `num_prefixes` shared few-shot/system prefixes."""
    _check(num_requests)
    if shared_prefix_len < 0 or num_prefixes < 1 or not shared_prefix_len < prompt_len[0] <= prompt_len[1]:
        raise ValueError("need shared_prefix_len >= 0, num_prefixes >= 1 and "
                         "shared_prefix_len < prompt_len[0] <= prompt_len[1]")
    rng = np.random.default_rng([seed, 3])
    times = arrivals(num_requests, rate, [seed, 3, 0])
    lens = rng.integers(prompt_len[0], prompt_len[1] + 1, size=num_requests).tolist()
    prefix = rng.integers(0, num_prefixes, size=num_requests).tolist()
    outs = _outputs(rng, num_requests, output_len)
    reqs = []
    for i in range(num_requests):
        segs = [Segment(f"mmlu-{seed}-prefix{prefix[i]}", shared_prefix_len),
                Segment(f"mmlu-{seed}-q{i}", lens[i] - shared_prefix_len)]
        reqs.append(_request(times[i], [s for s in segs if s.length], outs[i], vocab_size, f"mmlu-{seed}-{i}"))
    return reqs


def sharegpt(num_requests: int, *, rate: float = math.inf, seed: int = 0, prompt_median: int = 120,
             prompt_sigma: float = 1.0, output_median: int = 150, output_sigma: float = 0.9,
             max_prompt: int = 4096, max_output: int = 2048, vocab_size: int = DEFAULT_VOCAB) -> list[TraceRequest]:
    """Chat requests with lognormal prompt and output lengths (ShareGPT-like:
    means near 200 and 225 tokens), nothing shared."""
    _check(num_requests)
    rng = np.random.default_rng([seed, 4])
    times = arrivals(num_requests, rate, [seed, 4, 0])
    prompts = _lognormal(rng, num_requests, prompt_median, prompt_sigma, 4, max_prompt)
    outs = _lognormal(rng, num_requests, output_median, output_sigma, 4, max_output)
    return [_request(times[i], [Segment(f"sharegpt-{seed}-{i}", prompts[i])], outs[i], vocab_size,
                     f"sharegpt-{seed}-{i}") for i in range(num_requests)]


def multiturn(num_requests: int, *, rate: float = math.inf, seed: int = 0, turns: int = 4,
              system_prompt_len: int = 0, user_median: int = 60, user_sigma: float = 0.8,
              output_median: int = 120, output_sigma: float = 0.6, max_output: int = 1024,
              think_time: float = 10.0, vocab_size: int = DEFAULT_VOCAB) -> list[TraceRequest]:
    """Chat sessions of `turns` turns: turn k's prompt is turn k-1's prompt,
    its answer (the tokens the simulator produces for it, `sim_token`) and
    new user text, so later turns hit the cache on the whole history.
    Sessions start at Poisson times (rate/turns per second, so requests come
    at about `rate`); turn k arrives k*think_time after its session starts
    (open loop: a turn may arrive before the previous answer ends)."""
    _check(num_requests)
    if turns < 1 or system_prompt_len < 0 or think_time < 0:
        raise ValueError("need turns >= 1, system_prompt_len >= 0 and think_time >= 0")
    rng = np.random.default_rng([seed, 5])
    sessions = -(-num_requests // turns)
    starts = arrivals(sessions, rate / turns, [seed, 5, 0])
    reqs: list[TraceRequest] = []
    for s in range(sessions):
        users = _lognormal(rng, turns, user_median, user_sigma, 1, 1 << 16)
        outs = _lognormal(rng, turns, output_median, output_sigma, 1, max_output)
        segs = [Segment(f"chat-{seed}-system", system_prompt_len)] if system_prompt_len else []
        prev: TraceRequest | None = None
        for k in range(min(turns, num_requests - len(reqs))):
            if prev is not None:
                answer = tuple(sim_token(prev.req_id, p, vocab_size)
                               for p in range(prev.prompt_len, prev.prompt_len + prev.output_len))
                segs.append(Segment("", len(answer), answer))
            segs.append(Segment(f"chat-{seed}-s{s}-u{k}", users[k]))
            prev = _request(starts[s] + k * think_time, segs, outs[k], vocab_size, f"chat-{seed}-s{s}-t{k}")
            reqs.append(prev)
    reqs.sort(key=lambda r: r.arrival_time)
    return reqs


WORKLOADS: dict[str, Callable[..., list[TraceRequest]]] = {
    "mmmu_pro": mmmu_pro, "arxiv_qa": arxiv_qa, "mmlu_pro": mmlu_pro,
    "sharegpt": sharegpt, "multiturn": multiturn,
}


def make_workload(name: str, num_requests: int, **kwargs) -> list[TraceRequest]:
    """The workload called `name` (ValueError listing known names)."""
    try:
        gen = WORKLOADS[name.replace("-", "_").lower()]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None
    return gen(num_requests, **kwargs)
