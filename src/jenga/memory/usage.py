"""Named memory-usage results (for metrics, the simulator and tests)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GroupUsage:
    """One group: bytes in pages held by requests, in evictable cached
    pages, of state running requests still need (token granular), and of
    the large pages the group holds (free_bytes: their unused small pages)."""

    gid: int
    label: str
    used_bytes: int
    cached_bytes: int
    needed_bytes: int
    held_bytes: int = 0

    @property
    def free_bytes(self) -> int:
        return self.held_bytes - self.used_bytes - self.cached_bytes


@dataclass(frozen=True)
class MemoryUsage:
    pool_bytes: int
    free_bytes: int
    free_large_pages: int
    per_group: tuple[GroupUsage, ...]

    @property
    def used_bytes(self) -> int:
        return sum(g.used_bytes for g in self.per_group)

    @property
    def cached_bytes(self) -> int:
        return sum(g.cached_bytes for g in self.per_group)

    @property
    def needed_bytes(self) -> int:
        return sum(g.needed_bytes for g in self.per_group)

    @property
    def utilisation(self) -> float:
        """Bytes holding state a request still needs / pool bytes."""
        return self.needed_bytes / self.pool_bytes if self.pool_bytes else 0.0
