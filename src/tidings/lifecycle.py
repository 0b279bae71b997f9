"""Who reports users coming online and going offline, once for the cluster (pure, no I/O).

Every worker sees the same user changes in its presence view (:mod:`tidings.presence`):
a user's first connection anywhere makes it ``online``, its last one ``offline``, and a
worker that goes silent for ``cluster.presence_ttl`` takes its users offline with it.
Were each worker to report them, the application would get one event per worker. So one
worker reports, the *leader*: of the live workers that have *settled* (been up for the TTL,
so that their view is whole), the one that started first (ties: the smaller id). Every
worker computes the election from the same heartbeats, so they agree within a heartbeat.

:class:`Lifecycle` turns each batch of changes into what this worker must emit:

- while it leads, every change as it comes;
- while another leads, nothing; it remembers the changes of the last
  ``window`` seconds, and the last moment it knows the leader was alive;
- when it becomes leader (the one before went silent, or said goodbye, or there was
  none yet), it first emits again the changes it saw since the previous leader was last
  heard from, less ``margin`` (changes that leader may not have reported), then carries on.

So across a change of leader a transition is reported *at least once*: a replayed event
has the same ``id`` as the one the previous leader may have sent when both saw it caused
by the same connection (the usual case), and consumers dedupe on it. Two workers both
believing they lead (a leader's heartbeats late by more than the TTL) report the same
changes twice, with the same ids, until the next heartbeat settles it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tidings.presence import UserChange

__all__ = ["Due", "Lifecycle", "elect"]


def elect(electors: Iterable[tuple[float, str, float]]) -> tuple[str, float] | None:
    """The leader among ``(started, worker, last seen)`` candidates: the one that started
    first, ties to the smaller id; returns ``(worker, last seen)``, None when there is
    no candidate."""
    best = min(electors, key=lambda c: (c[0], c[1]), default=None)
    return None if best is None else (best[1], best[2])


@dataclass(frozen=True, slots=True)
class Due:
    """A user change this worker must report, with the wall-clock time it was seen."""

    change: UserChange
    time: float


class Lifecycle:
    """Decides which user changes this worker reports (see the module).

    Args:
        worker: this worker's id.
        window: seconds of changes kept for a take-over (at least the TTL, which is as
            long as a dead leader can go unnoticed, plus a heartbeat).
        margin: seconds before the previous leader was last heard from that are replayed
            too (a heartbeat: what it had seen but maybe not yet sent).
        limit: most changes kept, whatever their age.
    """

    def __init__(self, worker: str, window: float, margin: float, limit: int = 100_000) -> None:
        self.worker = worker
        self.window = window
        self.margin = margin
        self._recent: deque[tuple[float, Due]] = deque(maxlen=limit)
        self.leading = False
        #: Monotonic time up to which another leader is known to have been alive.
        self._covered = float("-inf")

    def step(
        self,
        changes: Sequence[UserChange],
        leader: tuple[str, float] | None,
        now: float,
        wall: float,
    ) -> list[Due]:
        """Takes this batch of changes and the current election; returns what to report.

        Args:
            changes: the view's user changes since the last step, in order.
            leader: :func:`elect`'s answer now.
            now: monotonic time.
            wall: Unix time (stamped on the events).
        """
        fresh = [Due(change, wall) for change in changes]
        self._recent.extend((now, due) for due in fresh)
        while self._recent and self._recent[0][0] < now - self.window:
            self._recent.popleft()
        if leader is None or leader[0] != self.worker:
            self.leading = False
            if leader is not None:
                self._covered = max(self._covered, leader[1] - self.margin)
            return []
        if self.leading:
            return fresh
        self.leading = True
        return [due for seen, due in self._recent if seen > self._covered]
