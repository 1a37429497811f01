"""Policies of encoder state: cross-attention KV and vision embeddings.

Both hold per-image state computed by a vision encoder, keyed by the image's
content hash, so equal images share pages and the encoder runs only for
images not cached.  Each image starts on a fresh page; all pages of an image
share one eviction time and priority, so an image is evicted whole.

- cross (mllama): the encoder tokens of every image, allocated once when the
  request first runs and kept to its end; text never enters this group.
- vision (LLaVA-style): embeddings of image tokens that sit in the sequence;
  loaded when a chunk first reaches the image and released page by page as
  chunks prefill them, so at most about one chunk of embeddings is held.  A
  prefix hit may not cut an image unless the rest of its pages are cached.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..hashing import image_page_key
from ..pool import PagePool
from ..reqstate import ActionLog, ReqMem
from .base import NO_PAGE, Alloc, Policy


def _encoder_written(spec, images, encoder_runs) -> int:
    return sum(images[k].num_tokens for k in encoder_runs) * spec.bytes_per_token


class _ImagePolicy(Policy):
    image_keyed = True
    def _pages(self, n: int) -> int:
        return -(-n // self.P)

    def _offsets(self, r: ReqMem) -> list[int]:
        offs, o = [], 0
        for img in r.images:
            offs.append(o)
            o += self._pages(img.num_tokens)
        return offs

    def _key(self, r: ReqMem, k: int, i: int) -> int:
        return image_page_key(r.images[k], i, f"{self.group.spec.kind}:{self.gid}")

    def init_table(self, r: ReqMem) -> list[int]:
        return [NO_PAGE] * sum(self._pages(img.num_tokens) for img in r.images)

    def _load(self, r: ReqMem, k: int, first: int, alloc: Alloc, pool: PagePool, log: ActionLog,
              now: int) -> bool:
        """Reference or allocate pages first.. of image k; run its encoder
        unless every page was cached."""
        table, off = r.tables[self.gid], self._offsets(r)[k]
        for i in range(first, self._pages(r.images[k].num_tokens)):
            page = pool.lookup(self.gid, self._key(r, k, i))
            if page is not None:
                pool.incref(self.gid, page)
            else:
                page = alloc()
                if page is None:
                    return False
                log.encoder_runs.add(k)
            table[off + i] = page
        r.image_time[k] = now
        return True

    def _count(self, r: ReqMem, images, pool: PagePool) -> tuple[int, int]:
        """(uncached, cached) pages `_load` would take for `images`, as
        (image, first page) pairs: it allocates the first, references the
        others, or allocates them too if an earlier group of the same
        allocation evicts them (hence optional)."""
        new = old = 0
        for k, first in images:
            for i in range(first, self._pages(r.images[k].num_tokens)):
                if pool.lookup(self.gid, self._key(r, k, i)) is None:
                    new += 1
                else:
                    old += 1
        return new, old

    def cacheable(self, r: ReqMem, num_computed: int) -> Iterator[tuple[int, int]]:
        table = r.tables[self.gid]
        for k, off in enumerate(self._offsets(r)):
            for i in range(self._pages(r.images[k].num_tokens)):
                if table[off + i] != NO_PAGE:
                    yield off + i, self._key(r, k, i)

    def _image_of(self, r: ReqMem, index: int) -> int:
        k = 0
        for k, off in enumerate(self._offsets(r)):
            if off > index:
                return k - 1
        return k

    def priority(self, r: ReqMem, index: int) -> int:
        return -r.images[self._image_of(r, index)].position

    def eviction_unit(self, r: ReqMem, index: int):
        # an image's pages serve a hit only together, wherever they lie:
        # evicting one evicts them all (two images sharing a large page
        # otherwise left page by page, interleaved)
        return self._key(r, self._image_of(r, index), -1)

    def release_time(self, r: ReqMem, index: int, now: int) -> int:
        return r.image_time.get(self._image_of(r, index), now)

    def take_hit(self, r: ReqMem, length: int, pool: PagePool, log: ActionLog) -> None:
        pass   # image pages are looked up when a chunk first needs them

    def snapshot(self, r: ReqMem) -> tuple:
        return list(r.tables[self.gid]), dict(r.image_time)

    def restore(self, r: ReqMem, snap: tuple, release) -> None:
        table, (old, times) = r.tables[self.gid], snap
        for i, (now, before) in enumerate(zip(table, old)):
            if now != before and now != NO_PAGE:
                release(i, now)
        table[:] = old
        r.image_time = times


class CrossPolicy(_ImagePolicy):
    kinds = ("cross",)

    @staticmethod
    def step_work(spec, start: int, end: int, images, encoder_runs) -> tuple[int, int, int]:
        enc = sum(img.num_tokens for img in images)
        return (end - start) * enc, enc * spec.bytes_per_token, _encoder_written(spec, images, encoder_runs)

    def grow_threshold(self, r: ReqMem) -> float:
        return -1 if r.images and r.tables[self.gid][0] == NO_PAGE else float("inf")

    def commit_threshold(self, r: ReqMem) -> float:
        loaded = r.images and r.tables[self.gid][0] != NO_PAGE
        return 0 if loaded and r.cached_upto[self.gid] == 0 else float("inf")

    def cacheable(self, r: ReqMem, num_computed: int) -> Iterator[tuple[int, int]]:
        r.cached_upto[self.gid] = 1
        return super().cacheable(r, num_computed)

    def pages_needed(self, r: ReqMem, start: int, end: int, hit_tokens: int, pool: PagePool) -> tuple[int, int]:
        if any(p != NO_PAGE for p in r.tables[self.gid]):
            return 0, 0
        return self._count(r, [(k, 0) for k in range(len(r.images))], pool)

    def grow(self, r: ReqMem, start: int, end: int, alloc: Alloc, pool: PagePool, log: ActionLog) -> bool:
        table = r.tables[self.gid]
        if any(p != NO_PAGE for p in table):
            return True
        return all(self._load(r, k, 0, alloc, pool, log, log.now) for k in range(len(r.images)))

    def longest_hit(self, r: ReqMem, upper: int, pool: PagePool) -> int:
        return upper   # cross KV is per image, reused or recomputed whatever the length

    def needed_units(self, r: ReqMem) -> int:
        return sum(img.num_tokens for img in r.images) if any(p != NO_PAGE for p in r.tables[self.gid]) else 0

    def footprint_units(self, context: int, encoder_tokens: int) -> int:
        return encoder_tokens

    def footprint_pages(self, context: int, encoder_tokens: int) -> int:
        return self._pages(encoder_tokens) if encoder_tokens else 0


class VisionPolicy(_ImagePolicy):
    kinds = ("vision",)
    decoder_layer = False

    @staticmethod
    def step_work(spec, start: int, end: int, images, encoder_runs) -> tuple[int, int, int]:
        """Embeddings are read by the chunk that prefills their image tokens."""
        used = sum(max(0, min(img.end, end) - max(img.position, start)) for img in images)
        return 0, used * spec.bytes_per_token, _encoder_written(spec, images, encoder_runs)

    def grow_threshold(self, r: ReqMem) -> float:
        # the next image a chunk may reach that is not loaded yet
        table, offs = r.tables[self.gid], self._offsets(r)
        for k, img in enumerate(r.images):
            if img.end > r.alloc_end and all(table[offs[k] + i] == NO_PAGE
                                             for i in range(self._pages(img.num_tokens))):
                return max(img.position, r.alloc_end)
        return float("inf")

    def commit_threshold(self, r: ReqMem) -> float:
        return 0 if any(p != NO_PAGE for p in r.tables[self.gid]) else float("inf")

    def _to_load(self, r: ReqMem, start: int, end: int) -> Iterator[tuple[int, int]]:
        """(image, first page) of each image [start, end) reaches that is
        not loaded yet."""
        table, offs = r.tables[self.gid], self._offsets(r)
        for k, img in enumerate(r.images):
            if img.position >= end or img.end <= start:
                continue
            if any(table[offs[k] + i] != NO_PAGE for i in range(self._pages(img.num_tokens))):
                continue   # already loaded
            yield k, (start - img.position) // self.P if start > img.position else 0

    def pages_needed(self, r: ReqMem, start: int, end: int, hit_tokens: int, pool: PagePool) -> tuple[int, int]:
        return self._count(r, list(self._to_load(r, start, end)), pool)

    def grow(self, r: ReqMem, start: int, end: int, alloc: Alloc, pool: PagePool, log: ActionLog) -> bool:
        return all(self._load(r, k, first, alloc, pool, log, log.now) for k, first in list(self._to_load(r, start, end)))

    def out_of_scope(self, r: ReqMem, next_pos: int) -> Iterator[int]:
        table = r.tables[self.gid]
        for k, off in enumerate(self._offsets(r)):
            img = r.images[k]
            for i in range(self._pages(img.num_tokens)):
                if table[off + i] != NO_PAGE and img.position + min((i + 1) * self.P, img.num_tokens) <= next_pos:
                    yield off + i

    def longest_hit(self, r: ReqMem, upper: int, pool: PagePool) -> int:
        length = upper
        for k in range(len(r.images) - 1, -1, -1):
            img = r.images[k]
            if img.position < length < img.end:
                first = (length - img.position) // self.P
                cached = all(pool.lookup(self.gid, self._key(r, k, i)) is not None
                             for i in range(first, self._pages(img.num_tokens)))
                if not cached:
                    length = img.position
        return length

    def needed_units(self, r: ReqMem) -> int:
        table, offs, n = r.tables[self.gid], self._offsets(r), 0
        for k, img in enumerate(r.images):
            if any(table[offs[k] + i] != NO_PAGE for i in range(self._pages(img.num_tokens))):
                n += img.end - max(img.position, r.num_computed)
        return n

    # At its peak a request holds an image's embeddings whole (loaded when the
    # first chunk reaches it); they are gone once its tokens are prefilled.
    def footprint_units(self, context: int, encoder_tokens: int) -> int:
        return encoder_tokens

    def footprint_pages(self, context: int, encoder_tokens: int) -> int:
        return self._pages(encoder_tokens) if encoder_tokens else 0

