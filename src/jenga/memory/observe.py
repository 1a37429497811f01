"""Observers of the memory manager: explicit hooks instead of subclasses.

A benchmark or the simulator's utilisation bookkeeping (sim/saturation.py)
subscribes a `MemoryObserver` with `MemoryManager.subscribe`; the manager
calls it after each public operation with that operation's arguments and
outcome.  Observers only read: they may query the manager (`usage`,
`page_tables`) but must not call its mutators.  The base class's methods do
nothing, so an observer overrides only what it watches.
"""

from __future__ import annotations

from collections.abc import Sequence

from .reqstate import StepActions
from .types import ImageRef


class MemoryObserver:
    """No-op hooks; see module doc."""

    def added(self, req_id: str, tokens: list[int], prompt_len: int, images: Sequence[ImageRef],
              salt: str, model: str) -> None:
        """A request was registered (`MemoryManager.add`)."""

    def released(self, req_id: str) -> None:
        """A request dropped all its pages (end or preemption)."""

    def removed(self, req_id: str) -> None:
        """A request was forgotten (after its release)."""

    def allocated(self, req_id: str, start: int, end: int, hit_tokens: int,
                  actions: StepActions | None) -> None:
        """`allocate(req_id, start, end, hit_tokens)` returned `actions`
        (None: memory was short and nothing was taken)."""

    def room_checked(self, num_tokens: int, encoder_tokens: int, chunk: int | None, room: bool) -> None:
        """`has_room_for(num_tokens, encoder_tokens, chunk)` answered `room`."""
