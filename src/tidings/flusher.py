"""The writers' scheduler: every connection with queued bytes is written once per loop turn.

A connection that queues its first bytes of a turn marks itself dirty; the flusher then
writes every dirty connection once, after the event loop has run the callbacks that were
ready with it (the log's batch of records among them), so the pushes of events that
arrive together share one write per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["Flushable", "Flusher"]


class Flushable(Protocol):
    """A connection with queued bytes, written once at the end of a batch of events."""

    def flush(self) -> None:
        """Writes what is queued."""


class Flusher:
    """Collects dirty connections and writes each once, in the order they became dirty.

    Args:
        call_soon: schedules a callback after the loop's ready callbacks (default: the
            running loop's ``call_soon``, looked up at the first mark); a test passes its own.
    """

    __slots__ = ("_call_soon", "_dirty")

    def __init__(self, call_soon: Callable[[Callable[[], None]], object] | None = None) -> None:
        self._call_soon = call_soon
        self._dirty: list[Flushable] = []

    def mark_dirty(self, conn: Flushable) -> None:
        """``conn`` has bytes queued; it is flushed once, after the current loop iteration's
        batches. A connection marks itself once per flush (when its queue was empty)."""
        if not self._dirty:
            call_soon = self._call_soon or asyncio.get_running_loop().call_soon
            call_soon(self.flush)
        self._dirty.append(conn)

    def flush(self) -> None:
        """Writes every dirty connection once."""
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    @property
    def pending(self) -> int:
        """Connections waiting for the next flush."""
        return len(self._dirty)
