"""The writers' scheduler: every connection with queued bytes is written once per flush.

A connection that queues its first bytes since its last write marks itself dirty; the
flusher then writes every dirty connection once, after the event loop has run the
callbacks that were ready with it (the log's batch of records among them), so the pushes
of events that arrive together share one write per connection.

Under load it also spaces its flushes: the next one starts no sooner than ``pace`` times
the CPU time the last one cost after it ended (at most ``max_wait`` later). A flush costs one
system call per dirty connection whatever it carries, so when flushes take a large share
of the loop, the pushes that arrive meanwhile wait for the next one and go out together:
fewer calls for the same deliveries. A quiet node is not slowed: a flush of 1,000
connections takes about 10 ms here, and events further apart than that are written at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Flushable", "Flusher", "Scheduler"]


class Flushable(Protocol):
    """A connection with queued bytes, written once at the end of a batch of events."""

    def flush(self) -> None:
        """Writes what is queued."""


class Scheduler(Protocol):
    """The part of an event loop the flusher uses (asyncio's loop is one)."""

    def call_soon(self, callback: _Callback, /) -> object:
        """Runs ``callback`` after the callbacks already ready."""

    def call_later(self, delay: float, callback: _Callback, /) -> object:
        """Runs ``callback`` in ``delay`` seconds."""


class _Callback(Protocol):
    def __call__(self) -> None: ...


#: Default spacing: a flush that cost d CPU seconds is followed by at least ``PACE * d``
#: of other work (reading, routing) before the next, which bounds the writing to about
#: half of a saturated loop and lets each write carry what arrived in the meantime.
PACE = 1.0
#: No push waits longer than this for the spacing, however long the last flush took.
MAX_WAIT = 0.05


class Flusher:
    """Collects dirty connections and writes each once, in the order they became dirty.

    Args:
        loop: the event loop (default: the running loop, looked up at the first mark); a
            test passes its own.
        clock: monotonic seconds, to schedule the next flush (uvloop's ``loop.time()``
            stands still within a loop turn).
        work_clock: this thread's CPU seconds, to time each flush: what it cost, not how
            long other processes kept the host from running it (on a busy host a flush's
            wall time can be several times its CPU time, and spacing by it would add that
            wait again).
        pace: the spacing between flushes, as a multiple of the last one's duration
            (0: every loop turn).
        max_wait: the longest a push is held back by the spacing, in seconds.
    """

    __slots__ = ("_clock", "_dirty", "_loop", "_max_wait", "_next_at", "_pace", "_work_clock")

    def __init__(
        self,
        loop: Scheduler | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        work_clock: Callable[[], float] = time.thread_time,
        pace: float = PACE,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._work_clock = work_clock
        self._dirty: list[Flushable] = []
        self._pace = pace
        self._max_wait = max_wait
        self._next_at = 0.0

    def mark_dirty(self, conn: Flushable) -> None:
        """``conn`` has bytes queued; it is written at the next flush. A connection marks
        itself once per write (when its queue was empty)."""
        if not self._dirty:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            wait = self._next_at - self._clock()
            if wait > 0:
                loop.call_later(wait, self.flush)
            else:
                loop.call_soon(self.flush)
        self._dirty.append(conn)

    def flush(self) -> None:
        """Writes every dirty connection once."""
        dirty, self._dirty = self._dirty, []
        if not dirty:
            return
        work_clock = self._work_clock
        started = work_clock()
        for conn in dirty:
            conn.flush()
        if self._pace:
            cost = work_clock() - started
            self._next_at = self._clock() + min(self._pace * cost, self._max_wait)

    @property
    def pending(self) -> int:
        """Connections waiting for the next flush."""
        return len(self._dirty)
