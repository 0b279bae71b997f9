"""Recovery from the log: what a client missed beyond its channel's history window, read
again from the log itself.

A node keeps a window of recent publications per channel (:mod:`tidings.history`); a client
whose position is older than the window was told ``recovered: false``, although the log (a
RabbitMQ stream, 24 h by default) still holds every event it missed. :class:`Recoverer`
reads the range ``(since, until]`` back with :meth:`~tidings.log.base.Log.scan`, routes
each record once and keeps the publications of the channels asked for; ``until`` is the
node's head when the read starts, a position its windows took over from. The caller then,
in one synchronous step, checks that the channel's window still covers ``until`` (a busy
channel may have moved past it meanwhile: the read then goes on from ``until``) and
subscribes with the window's recovery from ``until``, so the subscriber enters the hub at
that step and nothing falls between the read and live delivery, or comes twice.

*Shared reads.* Recoveries come in floods (a node restarts and its 10,000 clients come
back). A recovery does not read the log by itself: it waits for the next *pass*, which
takes every recovery waiting at its start and reads once from the smallest position of
them, routing each record once and handing each publication to every recovery that wants
it. At most ``recovery.max_scans`` passes read at once; recoveries that come during them
wait for the next one.

*Turns.* Live delivery shares the event loop with the passes, so no step of a recovery
holds it long: a pass awaits between its batches, and when it ends it wakes its
recoveries a slice at a time (:data:`RELEASE_PER_TURN`, a recovery counted once more for
each :data:`PUBLICATIONS_PER_RELEASE` publications it carries), letting the loop run between
two slices, since each woken recovery goes on to build and write its client's reply. A
waiting recovery costs a few objects and no timer of its own (one timer serves them all, in
the order of their deadlines): 10,000 of them at once must not make the collector walk the
heap over and over.

*Bounds.* A recovery gives up, and the client is told ``recovered: false`` with nothing
replayed, when its position is more than ``recovery.max_records`` behind the head, when its
channel has more than the namespace's ``recovery_max_publications`` in the range, when it
takes longer than ``recovery.max_seconds`` (waiting for a pass included), when the log no
longer holds its start (retention), when the channel's history was removed within it
(``history_remove``) or when the log changed epoch meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tidings.config import RecoverySettings
from tidings.log.base import Log, RangeGone
from tidings.publication import Publication
from tidings.record import Record
from tidings.router import Routed

__all__ = [
    "PUBLICATIONS_PER_RELEASE",
    "RELEASE_PER_TURN",
    "Covers",
    "Failed",
    "Found",
    "Recoverer",
    "Removal",
    "Route",
]

log = logging.getLogger(__name__)

#: Recoveries a finished pass wakes per loop turn.
RELEASE_PER_TURN = 100
#: Publications that count as one more recovery woken (a reply of 10,000 is ~1 MB to build
#: and write).
PUBLICATIONS_PER_RELEASE = 100


@dataclass(frozen=True, slots=True)
class Removal:
    """A record that removed a channel's history (``history_remove``): recoveries of that
    channel from before it fail, as they do from the window."""

    channel: str


#: What the node makes of a record for a recovery: where it goes, a removal, or nothing
#: (a command, an event no rule routes).
Route = Callable[[Record], Routed | Removal | None]

#: ``covers(channel, until)``: whether the channel's history window holds everything after
#: position ``until`` (the hand-over check).
Covers = Callable[[str, int], bool]


@dataclass(frozen=True, slots=True)
class Found:
    """Every publication of the channel with a position in ``(since, until]``, in order."""

    publications: tuple[Publication, ...]
    until: int


@dataclass(frozen=True, slots=True)
class Failed:
    """Why a recovery from the log gave up; ``reason`` is a metric label.

    Reasons: ``unavailable`` (the log cannot scan), ``too_far`` (over
    ``recovery.max_records``), ``too_many`` (over ``recovery_max_publications``),
    ``timeout`` (over ``recovery.max_seconds``), ``gone`` (retention), ``removed``
    (``history_remove``), ``epoch`` (the log changed incarnation), ``error`` (the read
    failed).
    """

    reason: str


class _Request:
    """One recovery waiting for, or in, a pass."""

    __slots__ = ("channel", "deadline", "done", "found", "limit", "over", "since")

    def __init__(
        self, channel: str, since: int, limit: int, deadline: float, done: asyncio.Future[int]
    ) -> None:
        self.channel = channel
        self.since = since
        self.limit = limit
        self.deadline = deadline
        self.found: list[Publication] = []
        #: The position the pass read up to; a Failed reason as the exception's text.
        self.done = done
        #: The recovery returned (or its caller left): nothing waits for it any more.
        self.over = False


class _GaveUp(Exception):
    """Ends a request's wait: ``args[0]`` is the Failed reason."""


class Recoverer:
    """Recoveries from the log, sharing reads.

    Args:
        event_log: the log to read (its :meth:`~tidings.log.base.Log.scan`).
        route: turns a record into its channels (the node's router).
        head: the last position the node has processed.
        epoch: the log's current epoch.
        settings: the ``[recovery]`` bounds.
        monotonic: the clock of the time budget.
    """

    def __init__(
        self,
        event_log: Log,
        route: Route,
        *,
        head: Callable[[], int],
        epoch: Callable[[], str],
        settings: RecoverySettings,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = event_log
        self._route = route
        self._head = head
        self._epoch = epoch
        self._settings = settings
        self._monotonic = monotonic
        self._waiting: list[_Request] = []
        self._passes: set[asyncio.Task[None]] = set()
        # Every recovery under way, oldest first: with one ``max_seconds`` for all, the
        # order of their deadlines too, so one timer (for the first) times them all out.
        self._timed: deque[_Request] = deque()
        self._timer: asyncio.TimerHandle | None = None
        #: Passes started and records read, for metrics and benchmarks.
        self.scans = 0
        self.records = 0

    async def recover(self, channel: str, since: int, limit: int, covers: Covers) -> Found | Failed:
        """Reads ``channel``'s publications after position ``since`` until a position
        that ``covers`` accepts.

        ``covers(channel, until)`` tells whether the channel's history window holds
        everything after ``until``; it is called right before this returns a
        :class:`Found`, in the same step, so a caller that subscribes in the step it
        resumes in hands over to the window with no gap.

        Args:
            channel: the channel.
            since: the last position the client saw.
            limit: most publications to give (the namespace's
                ``recovery_max_publications``).
            covers: the hand-over check.
        """
        if not self._log.scans:
            return Failed("unavailable")
        if self._head() - since > self._settings.max_records:
            return Failed("too_far")
        epoch = self._epoch()
        loop = asyncio.get_running_loop()
        deadline = self._monotonic() + self._settings.max_seconds
        request = _Request(channel, since, limit, deadline, loop.create_future())
        self._time(request)
        try:
            while True:
                self._waiting.append(request)
                self._start_passes()
                try:
                    until = await request.done
                except _GaveUp as gave_up:
                    return Failed(str(gave_up.args[0]))
                if self._epoch() != epoch:
                    return Failed("epoch")
                if covers(channel, until):
                    return Found(tuple(request.found), until)
                # The window moved past ``until`` while this task waited to run: read on.
                request.since = until
                request.done = loop.create_future()
        finally:
            request.over = True

    def _time(self, request: _Request) -> None:
        self._timed.append(request)
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        """Sets the timer for the first recovery still under way, if any."""
        timed = self._timed
        while timed and timed[0].over:
            timed.popleft()
        if timed:
            delay = max(0.0, timed[0].deadline - self._monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._expire)
        else:
            self._timer = None

    def _expire(self) -> None:
        """Gives up the recoveries past their deadline (``timeout``)."""
        now = self._monotonic()
        timed = self._timed
        while timed and (timed[0].over or timed[0].deadline <= now):
            _give_up(timed.popleft(), "timeout")
        self._arm()

    def _start_passes(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._passes) < self._settings.max_scans:
            task = loop.create_task(self._pass())
            self._passes.add(task)
            task.add_done_callback(self._pass_done)

    def _pass_done(self, task: asyncio.Task[None]) -> None:
        self._passes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a recovery pass failed", exc_info=task.exception())
        if self._waiting:
            self._start_passes()

    async def _pass(self) -> None:
        # One loop turn first: the recoveries of the commands read in this turn join.
        await asyncio.sleep(0)
        requests = [r for r in self._waiting if not r.done.done()]
        self._waiting.clear()
        if requests:
            self.scans += 1
            await self._serve(requests, self._head())

    async def _serve(self, requests: list[_Request], until: int) -> None:
        """Reads once for ``requests``, up to ``until``, and ends each of them."""
        live = requests
        while live:
            try:
                await self._scan(live, until)
            except RangeGone as gone:
                # Those whose start is gone fail; the others are read again from theirs.
                for request in live:
                    if request.since + 1 < gone.first:
                        _give_up(request, "gone")
                live = [r for r in live if not r.done.done()]
                continue
            except Exception as exc:
                log.warning("reading the log for %d recoveries failed: %r", len(live), exc)
                for request in live:
                    _give_up(request, "error")
                return
            await _release(live, until)
            return

    async def _scan(self, requests: list[_Request], until: int) -> None:
        """Reads ``(min since, until]`` once and hands each wanted publication over."""
        wanted: dict[str, list[_Request]] = {}
        for request in requests:
            wanted.setdefault(request.channel, []).append(request)
        after = min(r.since for r in requests)
        route = self._route
        async with contextlib.aclosing(self._log.scan(after, until)) as batches:
            async for batch in batches:
                self.records += len(batch)
                for record in batch:
                    routed = route(record)
                    if routed is None:
                        continue
                    if isinstance(routed, Removal):
                        for request in wanted.get(routed.channel, ()):
                            if record.position > request.since:
                                _give_up(request, "removed")
                        continue
                    for channel in routed.channels:
                        takers = wanted.get(channel)
                        if takers is None:
                            continue
                        pub = Publication(
                            channel, record.position, routed.data, record.timestamp, routed.info
                        )
                        for request in takers:
                            if pub.offset > request.since and not request.done.done():
                                request.found.append(pub)
                                if len(request.found) > request.limit:
                                    _give_up(request, "too_many")
                if all(r.done.done() for r in requests):
                    return  # every recovery of the pass gave up or left: stop reading
                # A log with batches ready hands the next without waiting: live delivery
                # gets its turn between two batches all the same.
                await asyncio.sleep(0)


async def _release(requests: list[_Request], until: int) -> None:
    """Wakes the recoveries a pass read for, a slice per loop turn: each goes on to answer
    its client, and live delivery runs between two slices."""
    budget = RELEASE_PER_TURN
    for request in requests:
        if request.done.done():
            continue
        if budget <= 0:
            await asyncio.sleep(0)
            budget = RELEASE_PER_TURN
            if request.done.done():  # timed out or left meanwhile
                continue
        request.done.set_result(until)
        budget -= 1 + len(request.found) // PUBLICATIONS_PER_RELEASE


def _give_up(request: _Request, reason: str) -> None:
    if not request.done.done():
        request.done.set_exception(_GaveUp(reason))
        request.found = []
