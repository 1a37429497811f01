"""Small value types shared by memory/ and sched/: images and named results."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageRef:
    """One image of a request.

    position: index in the prompt where the image starts.  For decoder-only
        VLMs (LLaVA) the prompt holds `num_tokens` placeholder tokens from
        there; for cross-attention models (mllama) the prompt holds one image
        token there and the image becomes `num_tokens` encoder tokens.
    content_hash: hash of the image's pixels; equal images share cache.
    """

    position: int
    num_tokens: int
    content_hash: str

    def __post_init__(self) -> None:
        if self.position < 0:
            raise ValueError(f"image position must be >= 0, got {self.position}")
        if self.num_tokens <= 0:
            raise ValueError(f"image num_tokens must be > 0, got {self.num_tokens}")
        if not self.content_hash:
            raise ValueError("image content_hash must be non-empty")

    @property
    def end(self) -> int:
        return self.position + self.num_tokens


@dataclass(frozen=True)
class PrefixHit:
    """Result of a prefix-cache lookup: `num_tokens` tokens of the prompt
    whose state is cached in every group; `per_group` is the longest hit
    each group alone could give (for per-group hit-rate metrics)."""

    num_tokens: int
    per_group: tuple[int, ...] = ()
