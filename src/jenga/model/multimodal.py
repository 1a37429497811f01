"""What a vision-language model needs beside the StepPlan: image inputs and
where each image's encoder state lies in the pool.

The StepPlan carries only `ImageRef`s (position, token count, content hash);
no pixels cross the step boundary.  The engine therefore registers each
request's preprocessed images in an `ImageStore` the runner owns, and the
runner drops them when the plan reports the request finished.

Encoder-state layout (the runner's side of the memory contract, see
sched/step.py and docs/vlm.md):
- a `cross` or `vision` group: image k's tokens start on a fresh page, after
  the pages of images 0..k-1; token i of the image is slot i % P of page
  table[offset_k + i // P];
- a group that `holds_encoder_tokens` (max-page's merged group on mllama):
  every layer of the group stores text and encoder tokens alike; the
  encoder tokens of all images sit contiguously from slot 0 of the table
  (the cross layers' own layer pages), the text tokens also from slot 0 (the
  self-attention layers' layer pages): different layers, so they never
  overlap, and the table's ceil((text + encoder) / P) pages cover both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from ..memory.plan import Group
from ..sched.step import NO_PAGE, SeqStep


@dataclass(frozen=True)
class ImageInput:
    """One preprocessed image.  pixel_values: [3, S, S] (CLIP-style) or
    [max_tiles, 3, S, S] (mllama); num_tokens: the tokens it becomes (the
    ImageRef's num_tokens); aspect_ratio_id / num_tiles: mllama's tiling."""

    pixel_values: torch.Tensor
    content_hash: str
    num_tokens: int
    aspect_ratio_id: int = 0
    num_tiles: int = 1

    def __post_init__(self) -> None:
        if self.num_tokens <= 0 or self.num_tiles <= 0:
            raise ValueError(f"image num_tokens={self.num_tokens} / num_tiles={self.num_tiles} must be > 0")


class ImageStore:
    """Image inputs of live requests, by request id; mutated by `add` and
    `drop` only."""

    def __init__(self) -> None:
        self._by_req: dict[str, tuple[ImageInput, ...]] = {}

    def add(self, req_id: str, images: Sequence[ImageInput]) -> None:
        """Register (or replace) a request's images, in prompt order."""
        self._by_req[req_id] = tuple(images)

    def get(self, req_id: str, k: int) -> ImageInput:
        """Image k of a request; ValueError when it was never registered."""
        images = self._by_req.get(req_id, ())
        if not 0 <= k < len(images):
            raise ValueError(f"request {req_id}: image {k} has no registered input ({len(images)} registered)")
        return images[k]

    def images(self, req_id: str) -> tuple[ImageInput, ...]:
        return self._by_req.get(req_id, ())

    def drop(self, req_ids: Iterable[str]) -> None:
        for r in req_ids:
            self._by_req.pop(r, None)

    def __len__(self) -> int:
        return len(self._by_req)


def image_slots(s: SeqStep, g: Group, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pages, offsets), each [num_tokens], of image k's tokens in group g's
    table of seq `s` (layout in the module doc); pages may hold NO_PAGE where
    the group released or never loaded a page."""
    P, table = g.page_tokens, torch.tensor(s.page_tables[g.gid], dtype=torch.long)
    sizes = [img.num_tokens for img in s.images]
    i = torch.arange(sizes[k])
    if g.holds_encoder_tokens:
        flat = sum(sizes[:k]) + i
        idx, offs = flat // P, flat % P
    else:
        idx, offs = sum(-(-n // P) for n in sizes[:k]) + i // P, i % P
    if len(table) <= int(idx[-1]):
        raise ValueError(f"request {s.req_id}: group {g.gid} table has {len(table)} pages, image {k} "
                         f"needs {int(idx[-1]) + 1}")
    return table[idx], offs


def require_pages(s: SeqStep, gid: int, k: int, pages: torch.Tensor) -> None:
    """ValueError naming the request when any of `pages` is NO_PAGE."""
    if bool((pages == NO_PAGE).any()):
        raise ValueError(f"request {s.req_id}: image {k} needs group {gid} pages that are NO_PAGE")


def encoder_runs(s: SeqStep, groups: Sequence[Group]) -> tuple[int, ...]:
    """Images whose encoder runs for seq `s` this step: those the plan lists,
    plus every image on a request's first step when a group keeps encoder
    tokens with the text (max-page keeps no cache of them, so a fresh or
    preempted request recomputes them)."""
    runs = set(s.encoder_runs)
    if s.start == 0 and s.images and any(g.holds_encoder_tokens for g in groups):
        runs.update(range(len(s.images)))
    return tuple(sorted(runs))
