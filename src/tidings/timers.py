"""One timer queue for every connection of a node, instead of a task per connection."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Timed", "TimerQueue"]


class Timed(Protocol):
    """Something with a deadline: ``on_timer`` runs at or after it and returns the next one."""

    def on_timer(self, now: float) -> float:
        """Runs due work; returns the next deadline (``inf`` for none)."""


class TimerQueue:
    """A heap of deadlines served by one task; entries replaced by a later schedule are skipped."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, resolution: float = 0.25
    ) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._current: dict[Timed, float] = {}
        self._seq = itertools.count()
        self._clock = clock
        self._resolution = resolution
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def schedule(self, item: Timed, when: float) -> None:
        """Runs ``item.on_timer`` at ``when`` (replacing its earlier deadline)."""
        if when == float("inf"):
            self._current.pop(item, None)
            return
        if self._current.get(item) == when:
            return
        self._current[item] = when
        heapq.heappush(self._heap, (when, next(self._seq), item))
        if self._heap[0][2] is item:
            self._wake.set()

    def cancel(self, item: Timed) -> None:
        """Forgets ``item``."""
        self._current.pop(item, None)

    def __len__(self) -> int:
        return len(self._current)

    def run_due(self, now: float) -> None:
        """Runs every item whose deadline has passed."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, item = heapq.heappop(heap)
            if self._current.get(item) != when:
                continue  # rescheduled or cancelled since
            del self._current[item]
            self.schedule(item, item.on_timer(now))

    def start(self) -> None:
        """Starts the serving task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stops the serving task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            now = self._clock()
            self.run_due(now)
            # Drop stale heap entries so the heap cannot outgrow the live set for long.
            if len(self._heap) > 4 * len(self._current) + 1024:
                self._heap = [e for e in self._heap if self._current.get(e[2]) == e[0]]
                heapq.heapify(self._heap)
            delay = self._heap[0][0] - self._clock() if self._heap else 3600.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(delay, self._resolution))
