"""The embedded log: an in-process list of recent events, for one process.

It stands in for RabbitMQ in the quick start, the demo and the unit tests. Positions come
from a counter and the epoch is new at each start, so a client that held a position from
an earlier run is told plainly that its recovery failed. It keeps what it retains for
:meth:`MemoryLog.scan`, the reference of a range read: positions are contiguous here, so a
range is gone exactly when the oldest record kept is past its start.

:class:`MemoryLedger` is the ledger's reference the same way: a write is applied at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence

from tidings.ledger import Ledger, LedgerError
from tidings.log.base import Log, LogConsumer, RangeGone
from tidings.record import Record

__all__ = ["MemoryLedger", "MemoryLog"]


class MemoryLog(Log):
    """A log kept in memory; ``append`` delivers synchronously to the consumer."""

    #: Records per batch of :meth:`scan`.
    SCAN_BATCH = 1000

    def __init__(
        self,
        retention_seconds: float = 3600.0,
        max_records: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._epoch = uuid.uuid4().hex[:12]
        self._records: deque[Record] = deque(maxlen=max_records)
        self._retention = retention_seconds
        self._clock = clock
        self._next = 1
        self._consumer: LogConsumer | None = None
        self._closed = False

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def ready(self) -> bool:
        return self._consumer is not None and not self._closed

    @property
    def position(self) -> int:
        return self._next - 1

    async def start(self, consumer: LogConsumer, warm_seconds: float) -> None:
        self._consumer = consumer
        since = self._clock() - warm_seconds
        warm = [r for r in self._records if r.timestamp >= since]
        if warm:
            consumer.on_records(warm)

    async def append(
        self, routing_key: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        if self._closed:
            raise RuntimeError("the log is closed")
        now = self._clock()
        record = Record(self._next, routing_key, body, now, dict(headers or {}))
        self._next += 1
        self._records.append(record)
        cutoff = now - self._retention
        while self._records and self._records[0].timestamp < cutoff:
            self._records.popleft()
        if self._consumer is not None:
            self._consumer.on_records((record,))

    @property
    def scans(self) -> bool:
        return not self._closed

    async def scan(self, after: int, until: int) -> AsyncGenerator[Sequence[Record], None]:
        records = self._records
        first = records[0].position if records else self._next
        if after + 1 < first and after < until:
            raise RangeGone(first)
        # A copy: appends and evictions may happen while the reader waits between batches.
        wanted = [r for r in records if after < r.position <= until]
        for start in range(0, len(wanted), self.SCAN_BATCH):
            if start:
                await asyncio.sleep(0)
            yield wanted[start : start + self.SCAN_BATCH]

    def quarantine(self, record: Record, kind: str, reason: str) -> None:
        # Nothing to copy to: the node has already counted and logged the record.
        return None

    async def close(self) -> None:
        self._closed = True
        self._consumer = None


class MemoryLedger(Ledger):
    """The ledger of one process: a write is applied at once, and lost at exit."""

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._closed = False

    @property
    def ready(self) -> bool:
        return self._started and not self._closed

    async def start(self) -> None:
        # Nothing was written before this process: there is nothing to replay.
        self._started = True

    async def put(self, kind: str, key: str, value: bytes | None) -> None:
        if self._closed:
            raise LedgerError("the ledger is closed")
        self.apply(kind, key, value)

    async def close(self) -> None:
        self._closed = True
