"""Chained block hashes for the prefix cache.

Block b's hash covers every token in blocks 0..b, so equal hashes mean equal
prefixes.  Extra keys enter the chain: the cache salt and model tag at block
0, and the content hash of every image overlapping a block, so the same
placeholder tokens with different pictures never match.  Python's built-in
tuple hash is used: fast, 64-bit, stable within one process (the cache never
outlives the process).
"""

from __future__ import annotations

from collections.abc import Sequence

from .types import ImageRef


class BlockHasher:
    """Incremental chained hashes of one request's token blocks.

    `update(tokens, n)` extends `hashes` to cover every complete block of the
    first n tokens; it never rehashes a block.  hashes[b] is the key of the
    prefix ending at token (b+1)*block_tokens.
    """

    def __init__(self, block_tokens: int, images: Sequence[ImageRef] = (), salt: str = "",
                 model: str = "main") -> None:
        self.block_tokens = block_tokens
        self.images = tuple(images)
        self.root = hash(("jenga-root", salt, model))
        self.hashes: list[int] = []

    def _extra(self, lo: int, hi: int) -> tuple[str, ...]:
        return tuple(img.content_hash for img in self.images if img.position < hi and img.end > lo)

    def update(self, tokens: Sequence[int], n: int) -> list[int]:
        """Hash every complete block within tokens[:n]; returns self.hashes."""
        B = self.block_tokens
        parent = self.hashes[-1] if self.hashes else self.root
        for b in range(len(self.hashes), n // B):
            lo = b * B
            extra = self._extra(lo, lo + B) if self.images else ()
            parent = hash((parent, tuple(tokens[lo:lo + B]), extra))
            self.hashes.append(parent)
        return self.hashes

    def page_keys(self, tokens: Sequence[int], n: int, page_tokens: int, first: int = 0) -> list[int]:
        """Keys of the prefixes ending at each multiple of `page_tokens`
        (a multiple of block_tokens) within tokens[:n], from page `first`
        on: one slice of the hash list, no per-page call (prefix lookups
        scan whole prompts)."""
        if page_tokens <= 0 or page_tokens % self.block_tokens:
            raise ValueError(f"page_tokens must be a positive multiple of {self.block_tokens}, got {page_tokens}")
        if n > len(tokens):
            n = len(tokens)
        step = page_tokens // self.block_tokens
        hashes = self.hashes if n // self.block_tokens <= len(self.hashes) else self.update(tokens, n)
        return hashes[(first + 1) * step - 1:n // page_tokens * step:step]

    def key_at(self, position: int) -> int | None:
        """Key of the prefix of `position` tokens (a block boundary), if hashed."""
        if position <= 0 or position % self.block_tokens:
            return None
        b = position // self.block_tokens - 1
        return self.hashes[b] if b < len(self.hashes) else None


def image_page_key(image: ImageRef, page_index: int, tag: str) -> int:
    """Key of one page of an image's encoder state (vision embeddings or
    cross-attention KV); `tag` separates groups' and models' copies."""
    return hash(("jenga-image", tag, image.content_hash, image.num_tokens, page_index))
