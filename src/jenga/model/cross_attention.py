"""Cross-attention over encoder tokens in the pool (mllama).

Text tokens of a request with images attend to the K/V of its images'
encoder tokens, which the encoder run wrote into the cross pages once
(multimodal.py has the slot layout).  Which images a text token sees follows
transformers' mllama processor: image k is seen from its `<|image|>` token
up to the next image token (consecutive image tokens all reach the text
after them), the last image to the end of the prompt, and generated tokens
see what the last prompt token sees; tiles beyond an image's own tile count
are never seen.  A token that sees no image (text before the first image
token) attends to every encoder token of the request, unmasked, and its
cross-layer MLP output is dropped: that is what transformers computes.

`build_cross_metadata` turns a step into one `CrossMetadata` per group that
holds cross layers: the token rows involved, whether each row sees an image,
and gather batches (seqs bucketed by their number of new tokens) of key
slots and masks.  It is built once per step and passed to `forward`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..memory.plan import Group
from ..sched.step import SeqStep, StepPlan
from .attention import attend
from .kv_quant import dequantize
from .multimodal import ImageStore, image_slots, require_pages


@dataclass(frozen=True)
class CrossBatch:
    """Seqs with the same number of new tokens.  local [B, Q]: their rows
    in CrossMetadata.rows order; pages / offsets / valid [B, E]: key slots,
    padded with slot (0, 0) marked invalid; mask [B, Q, E]: True = attend."""

    local: torch.Tensor
    pages: torch.Tensor
    offsets: torch.Tensor
    valid: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class CrossMetadata:
    """rows [R]: step token rows of the seqs that have images; sees [R]:
    1.0 where the row sees an image, else 0.0 (its MLP output is dropped)."""

    gid: int
    rows: torch.Tensor
    sees: torch.Tensor
    batches: tuple[CrossBatch, ...]


def image_ranges(positions: Sequence[int], prompt_len: int) -> list[tuple[int, int]]:
    """[start, end) of the prompt positions that see each image, from the
    image tokens' positions (transformers' get_cross_attention_token_mask)."""
    if len(positions) == 1:
        return [(positions[0], prompt_len)]
    ranges = [[a, b] for a, b in zip(positions[:-1], positions[1:])] + [[positions[-1], prompt_len]]
    last_end = ranges[-1][1]
    for r in reversed(ranges):
        if r[0] == r[1] - 1:   # consecutive image tokens reach the text after them
            r[1] = last_end
        last_end = r[1]
    return [(a, b) for a, b in ranges]


def _seq_keys(s: SeqStep, g: Group, store: ImageStore, patches: int):
    """Key slots of all the seq's encoder tokens, the mask of its new tokens
    over them [Q, E], and which of its tokens see an image [Q]."""
    pages, offs, img_of, real = [], [], [], []
    for k, img in enumerate(s.images):
        p, o = image_slots(s, g, k)
        require_pages(s, g.gid, k, p)
        pages.append(p)
        offs.append(o)
        img_of.append(torch.full((img.num_tokens,), k))
        real.append(torch.arange(img.num_tokens) // patches < store.get(s.req_id, k).num_tiles)
    ranges = torch.tensor(image_ranges([img.position for img in s.images], s.prompt_len))
    q = torch.arange(s.start, s.end).clamp(max=s.prompt_len - 1)
    img_of_t = torch.cat(img_of)
    lo, hi = ranges[img_of_t, 0], ranges[img_of_t, 1]
    allowed = torch.cat(real)[None, :] & (lo[None, :] <= q[:, None]) & (q[:, None] < hi[None, :])
    sees = allowed.any(dim=1)
    mask = torch.where(sees[:, None], allowed, torch.ones_like(allowed))
    return torch.cat(pages), torch.cat(offs), mask, sees


def build_cross_metadata(step: StepPlan, g: Group, store: ImageStore, patches: int,
                         device: torch.device) -> CrossMetadata | None:
    """Metadata of group `g`'s cross layers for `step`; None when no seq has
    images.  `patches`: encoder tokens per tile.  Raises ValueError when a
    cross page is missing or an image has no registered input."""
    rows, sees, per_seq, buckets, row0, n = [], [], [], {}, 0, 0
    for s in step.seqs:
        if s.images:
            pages, offs, mask, seen = _seq_keys(s, g, store, patches)
            rows.append(torch.arange(row0, row0 + s.num_tokens))
            sees.append(seen)
            buckets.setdefault(s.num_tokens, []).append(len(per_seq))
            per_seq.append((n, pages, offs, mask))
            n += s.num_tokens
        row0 += s.num_tokens
    if not per_seq:
        return None
    batches = []
    for Q, idx in buckets.items():
        E = max(per_seq[i][1].numel() for i in idx)
        B = len(idx)
        local = torch.stack([torch.arange(per_seq[i][0], per_seq[i][0] + Q) for i in idx])
        pages, offs = torch.zeros(B, E, dtype=torch.long), torch.zeros(B, E, dtype=torch.long)
        valid, mask = torch.zeros(B, E, dtype=torch.bool), torch.zeros(B, Q, E, dtype=torch.bool)
        for b, i in enumerate(idx):
            _, p, o, m = per_seq[i]
            pages[b, :p.numel()], offs[b, :p.numel()], valid[b, :p.numel()] = p, o, True
            mask[b, :, :p.numel()] = m
        batches.append(CrossBatch(*(t.to(device) for t in (local, pages, offs, valid, mask))))
    return CrossMetadata(g.gid, torch.cat(rows).to(device), torch.cat(sees).to(device, torch.float32),
                         tuple(batches))


def cross_attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: CrossMetadata,
                 scale: float) -> torch.Tensor:
    """Attention of q [R, Hq, D] (rows in meta.rows order) over each seq's
    encoder K/V gathered from the pool; returns [R, Hq, D]."""
    out = torch.empty_like(q)
    for b in meta.batches:
        B, Q = b.local.shape
        # padded slots may hold stale bytes of another group or dtype: zero, not just mask
        stale = ~b.valid[:, :, None, None]
        keys = dequantize(k_cache[b.pages, b.offsets], q.dtype).masked_fill(stale, 0)
        values = dequantize(v_cache[b.pages, b.offsets], q.dtype).masked_fill(stale, 0)
        o = attend(q[b.local], keys, values, b.mask, scale)
        out[b.local.reshape(-1)] = o.reshape(B * Q, *o.shape[2:]).to(q.dtype)
    return out
