"""The interface every log backend implements.

A log hands the node every event in position order, exactly once per position while the
node runs, and names its incarnation with an *epoch*. Positions are the log's own
offsets: the same event has the same position on every node reading the same log.

Two backends implement exactly this interface: :mod:`tidings.log.memory`, the reference
(one process, a few lines per method), and :mod:`tidings.log.rabbitmq`, a RabbitMQ stream
read whole by every node. The node is the only :class:`LogConsumer`.

Besides the tail every node follows, a log can read a past range again (:meth:`Log.scan`):
that is how a client whose position left the node's history windows is recovered from
the log itself (:mod:`tidings.recovery`).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Protocol

from tidings.record import Record

__all__ = ["Log", "LogConsumer", "RangeGone", "ScanUnavailable"]


class RangeGone(Exception):
    """The log no longer holds the start of a range (retention removed it).

    Attributes:
        first: the first position the log still holds (0 when unknown).
    """

    def __init__(self, first: int) -> None:
        super().__init__(f"the log holds positions from {first} on")
        self.first = first


class ScanUnavailable(Exception):
    """The log cannot read past ranges now (not started, or no protocol to read them)."""


class LogConsumer(Protocol):
    """What a log calls; implemented by the node."""

    def on_records(self, records: Sequence[Record]) -> None:
        """Take a batch of records in position order; must not block or await."""

    def on_epoch(self, epoch: str) -> None:
        """The log changed incarnation: positions restarted, history must be dropped."""


class Log(abc.ABC):
    """An ordered, positioned event log."""

    @property
    @abc.abstractmethod
    def epoch(self) -> str:
        """The name of the log's current incarnation."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True once warmed up and while connected; ``/readyz`` reports it."""

    @property
    @abc.abstractmethod
    def position(self) -> int:
        """The last position the log has passed (delivered or skipped); 0 before any.

        After ``start`` returns, the node is complete from here when the warm-up window
        held no record at all.
        """

    @abc.abstractmethod
    async def start(self, consumer: LogConsumer, warm_seconds: float) -> None:
        """Start delivering: first what was appended in the last ``warm_seconds``, then the tail.

        Returns once the warm-up records were delivered (or the log is known to be empty).
        """

    @abc.abstractmethod
    async def append(
        self, routing_key: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Append one event; it reaches consumers through ``on_records`` like any other."""

    @property
    @abc.abstractmethod
    def scans(self) -> bool:
        """Whether :meth:`scan` can read past ranges now."""

    @abc.abstractmethod
    def scan(self, after: int, until: int) -> AsyncGenerator[Sequence[Record], None]:
        """Reads the records with positions in ``(after, until]`` again, in batches in
        position order; ``until`` must be a position the log has passed.

        The reader awaits between batches, so a long range does not hold the event loop;
        leaving the iteration early (``aclose``, a break) stops the read.

        Raises:
            RangeGone: position ``after + 1`` is no longer held.
            ScanUnavailable: the log cannot read ranges now.
        """

    @abc.abstractmethod
    def quarantine(self, record: Record, kind: str, reason: str) -> None:
        """Keep a copy of a record the node could not route (no-op where nothing is set up)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release connections."""
