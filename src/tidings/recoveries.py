"""A node's recoveries from the log: which positions need one, and reading until the
window takes over.

A position older than its channel's history window is recovered from the log when the
namespace allows it (``recovery_max_publications``, history kept) and the log can scan;
the reads themselves are :class:`~tidings.recovery.Recoverer`'s. A read ends at a position
the window covers, checked again in the step the caller resumes in: several channels' reads
end at different moments, so those whose windows moved past their read read on. A record
read again is routed as live ones are, and a ``history_remove`` command among them fails
the recoveries of its channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from tidings import commands
from tidings.config import ChannelOptions, Settings
from tidings.history import History
from tidings.log.base import Log
from tidings.metrics import Metrics
from tidings.protocol.messages import RecoverPosition
from tidings.protocol.operations import NotRecovered, Recovered
from tidings.record import Record
from tidings.recovery import Failed, Recoverer, Removal
from tidings.router import Rejected, Routed, Router

__all__ = ["Recoveries"]

log = logging.getLogger(__name__)


class Recoveries:
    """The node's side of recoveries from the log.

    Args:
        settings: the settings (``[recovery]``, ``api.key`` of the commands read again).
        event_log: the log, read again by the recoverer.
        router: the node's router, for the records read again.
        history: the node's history windows, which take over from the reads.
        options: a channel's namespace options, None for an unknown one.
        limits: a channel's window size and TTL, ``(0, 0.0)`` for an unknown one.
        head: the last position the node has processed.
        metrics: where the reads are counted (``recoveries{outcome="stream"}``, …).
        clock: wall time, of the windows' TTLs.
        monotonic: the clock of the reads' time budget.
    """

    def __init__(
        self,
        settings: Settings,
        event_log: Log,
        router: Router,
        history: History,
        options: Callable[[str], ChannelOptions | None],
        limits: Callable[[str], tuple[int, float]],
        *,
        head: Callable[[], int],
        metrics: Metrics,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self._key = settings.api.key
        self._log = event_log
        self._router = router
        self._history = history
        self._options = options
        self._limits = limits
        self._head = head
        self._metrics = metrics
        self._clock = clock
        #: The reads, shared between recoveries.
        self.recoverer = Recoverer(
            event_log,
            self.route,
            head=head,
            epoch=lambda: event_log.epoch,
            settings=settings.recovery,
            monotonic=monotonic,
        )

    def wanted(self, channel: str, position: RecoverPosition) -> bool:
        """Whether a client at ``position`` on ``channel`` is recovered from the log: its
        namespace allows it, the log can scan, same epoch, and older than the window."""
        options = self._options(channel)
        if options is None or options.recovery_max_publications <= 0:
            return False
        size, ttl = options.history_size, options.history_ttl
        if size <= 0 or ttl <= 0 or not self._log.scans:
            return False
        if position.epoch and position.epoch != self._log.epoch:
            return False
        since = position.offset
        complete = self._history.complete_since(channel, size=size, ttl=ttl, now=self._clock())
        return since < complete and since < self._head()

    async def since(self, since: Mapping[str, int]) -> dict[str, Recovered | NotRecovered]:
        """Reads each channel's publications after its position (channel -> the last offset
        the client saw, in the log's current epoch) up to a position its window covers in
        the step this returns in."""
        if len(since) == 1:
            # The common case (a client's subscribe) in the recovery's own step: no task
            # of its own, and the check below is the one the recoverer made in this step.
            [(channel, offset)] = since.items()
            return {channel: await self._recover_one(channel, offset)}
        found: dict[str, Recovered | NotRecovered] = {}
        while since:
            outcomes = await asyncio.gather(
                *(self._recover_one(channel, offset) for channel, offset in since.items())
            )
            # The reads ended at different moments: check every window again, now, and read
            # on for those that moved past their read.
            behind: dict[str, int] = {}
            for channel, outcome in zip(since, outcomes, strict=True):
                earlier = found.get(channel)
                if isinstance(outcome, Recovered) and isinstance(earlier, Recovered):
                    read = earlier.publications + outcome.publications
                    outcome = Recovered(read, outcome.position)
                found[channel] = outcome
                if isinstance(outcome, Recovered) and not self.covers(channel, outcome.position):
                    behind[channel] = outcome.position
            since = behind
        return found

    async def _recover_one(self, channel: str, since: int) -> Recovered | NotRecovered:
        """Reads ``channel``'s publications after ``since`` from the log (tidings.recovery);
        a Recovered's position is covered by the window in the step this returns in."""
        options = self._options(channel)
        limit = options.recovery_max_publications if options is not None else 0
        outcome = await self.recoverer.recover(channel, since, limit, self.covers)
        if isinstance(outcome, Failed):
            self._metrics.recoveries.labels("stream_failed").inc()
            log.info(
                "recovery of %r from position %d not read from the log: %s",
                channel,
                since,
                outcome.reason,
            )
            return NotRecovered(outcome.reason)
        self._metrics.recoveries.labels("stream").inc()
        return Recovered(outcome.publications, outcome.until)

    def covers(self, channel: str, position: int) -> bool:
        """Whether ``channel``'s window holds every publication after ``position``."""
        size, ttl = self._limits(channel)
        complete = self._history.complete_since(channel, size=size, ttl=ttl, now=self._clock())
        return complete <= position

    def route(self, record: Record) -> Routed | Removal | None:
        """A record read again for a recovery: its channels, a history removal, or None."""
        if commands.COMMAND_HEADER in record.headers:
            try:
                command = commands.decode(record.headers, record.body, self._key)
            except commands.CommandError:
                return None
            return Removal(command.channel) if command.kind == "history_remove" else None
        routed = self._router.route(record)
        return None if isinstance(routed, Rejected) else routed
