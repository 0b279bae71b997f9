"""The ledger in a RabbitMQ stream: every node writes to it and reads it whole.

*Writes.* :meth:`RabbitMqLedger.put` publishes a :class:`~tidings.log.ledger_wire.Write`
(kind, key, value or delete, and the writer's id and sequence number) to the stream
``ledger.stream`` (``<amqp.stream>.state`` by default), persistent and with publisher
confirms, then waits until this node has read it back and applied it: a ``put`` that
returns is visible to ``get`` here (read-your-writes), and to every other node once it
has read as far. Every node applies the writes in the stream's order, through the
kinds' merges, so nodes that have read as far hold the same table. A put raises
:class:`~tidings.ledger.LedgerError` when the ledger is not connected (nothing was
sent), when the broker did not confirm it in time (it may still be in the stream: then
every node applies it alike; a merge that is not idempotent sees it once either way,
since nothing is sent again), or when it was confirmed but not read back in time (it is
applied once read). A kind, key or value larger than ``MAX_*_BYTES`` of
:mod:`~tidings.log.ledger_wire`, or a write that would grow the table past an eighth of
``ledger.max_bytes`` (:attr:`RabbitMqLedger.table_limit`), is refused before sending
(the check counts the value written: a merge that keeps more than it is given, and other
nodes' writes not read yet, can take the table a little past it).

*Reading.* Each ledger consumes the stream over AMQP 0-9-1 (a consumer with
``x-stream-offset``) from ``first`` at :meth:`~RabbitMqLedger.start`, writes a
:class:`~tidings.log.ledger_wire.Mark` right after attaching and returns once it has read
it back: everything written before the start is then applied. It then keeps reading.
AMQP 0-9-1, not the stream protocol that the log's tail and scans use: the ledger's
traffic is small (a write per subscription or read position), every broker has AMQP
0-9-1 (the stream protocol needs a plugin and a port of its own), and publishing and
consuming share one channel of the same robust connection, whose reconnects aio-pika
makes. The price is the start-up: about 13,000 records a second on one core
(``benchmarks.ledger``), so a start reads up to ``ledger.max_bytes`` of stream, and a
smaller retention starts nodes sooner. A connection lost during that read is resumed
like any other, and ``start`` still returns once caught up.

The ledger's rooms: attaching to the stream, reconnects and a deleted stream in
:mod:`~tidings.log.ledger_link`; snapshots and the retention in
:mod:`~tidings.log.ledger_snapshot`; rebuilding the table from what the stream holds in
:mod:`~tidings.log.ledger_replay`; the records' bytes in :mod:`~tidings.log.ledger_wire`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiormq.abc

from tidings.config import AmqpSettings, LedgerSettings
from tidings.ledger import Ledger, LedgerError
from tidings.log.broker import SourceError
from tidings.log.ledger_link import StreamLink, stream_arguments
from tidings.log.ledger_replay import Replay
from tidings.log.ledger_snapshot import PART_BYTES, SnapshotWriter
from tidings.log.ledger_wire import (
    MAX_KEY_BYTES,
    MAX_KIND_BYTES,
    MAX_VALUE_BYTES,
    Mark,
    Record,
    Write,
    decode,
    encode,
    entry_size,
)
from tidings.metrics import Metrics

__all__ = ["PART_BYTES", "RabbitMqLedger", "stream_arguments"]

log = logging.getLogger(__name__)

#: A record's bytes in the stream beyond its body (properties, chunk headers): counted
#: with every write, so small writes still bring the next snapshot in time.
_OVERHEAD = 128


class RabbitMqLedger(Ledger):
    """The ledger kept in a RabbitMQ stream (see the module).

    Args:
        amqp: the ``[amqp]`` settings (the broker, ``stream_replicas``).
        settings: the ``[ledger]`` settings.
        metrics: where writes, entries and snapshots are counted.
        name: the connection's name, shown by RabbitMQ.
        timeout: seconds a put waits for its confirm and its read-back together, and
            the limit of any other broker operation.
        snapshot_jitter: longest pause before writing a snapshot that is due.
        part_bytes: entries' bytes per snapshot message.
    """

    def __init__(
        self,
        amqp: AmqpSettings,
        settings: LedgerSettings,
        *,
        metrics: Metrics | None = None,
        name: str = "tidings ledger",
        timeout: float = 10.0,
        snapshot_jitter: float = 1.0,
        part_bytes: int = PART_BYTES,
    ) -> None:
        super().__init__()
        if not amqp.addresses:
            raise SourceError("amqp.url is not set: the RabbitMQ ledger needs a broker")
        self.stream = settings.stream_name(amqp)
        #: Most bytes the table may take (an eighth of ``ledger.max_bytes``).
        self.table_limit = settings.max_bytes // 8
        self._metrics = metrics or Metrics()
        self._timeout = timeout

        self._writer = uuid.uuid4().bytes
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._replay = Replay(self, self._on_record)
        self._table_bytes = 0
        self._link = StreamLink(
            amqp,
            settings,
            replay=self._replay,
            on_record=self._read,
            on_attached=self._mark_attached,
            on_away=self._away,
            name=name,
            timeout=timeout,
        )
        self._snapshots = SnapshotWriter(
            self,
            settings,
            replay=self._replay,
            link=self._link,
            metrics=self._metrics,
            timeout=timeout,
            jitter=snapshot_jitter,
            part_bytes=part_bytes,
        )
        # The mark of the current attachment, and whether it was read back.
        self._mark: int | None = None
        self._caught_up = False
        self._first_caught_up: asyncio.Future[None] | None = None
        self._started = False
        self._closed = False

    # -- the Ledger interface ----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while attached, caught up with the stream and exact."""
        return (
            self._link.raw is not None
            and self._caught_up
            and self._replay.live
            and not self._closed
            and self._link.gone is None
        )

    async def start(self) -> None:
        """Connects, declares the stream, replays it and returns once caught up.

        Raises:
            SourceError: no broker (after ``amqp.retry_on_start``), a refused login, or a
                stream that exists with other settings.
        """
        if self._started:
            raise RuntimeError("RabbitMqLedger.start() was already called")
        self._started = True
        self._first_caught_up = asyncio.get_running_loop().create_future()
        try:
            await self._link.open()
            await self._first_caught_up
        except BaseException:
            await self.close()
            raise
        log.info(
            "ledger: read stream %r up to offset %d, %d bytes in the table",
            self.stream,
            (self._replay.next or 0) - 1,
            self._table_bytes,
        )

    async def put(self, kind: str, key: str, value: bytes | None) -> None:
        """Writes ``key`` for every node and returns once applied here (see the module).

        Raises:
            LedgerError: refused (too large, not started, closed), not sent (not
                connected), or not confirmed or not read back within ``timeout``.
        """
        writes = self._metrics.ledger_writes
        try:
            self._check(kind, key, value)
        except LedgerError:
            writes.labels("refused").inc()
            raise
        raw = self._link.raw
        if self._link.gone is not None:
            writes.labels("failed").inc()
            raise LedgerError(f"{self._link.gone}: the write of {kind}/{key} was not sent")
        if raw is None or raw.is_closed or not self.ready:
            writes.labels("failed").inc()
            raise LedgerError(
                f"the ledger is not connected to RabbitMQ (stream {self.stream!r}) or not "
                f"caught up: the write of {kind}/{key} was not sent"
            )
        self._seq += 1
        seq = self._seq
        applied = self._waiting[seq] = asyncio.get_running_loop().create_future()
        confirmed = False
        try:
            async with asyncio.timeout(self._timeout):
                await self._link.publish(raw, encode(Write(self._writer, seq, kind, key, value)))
                confirmed = True
                await applied
        except (TimeoutError, LedgerError) as exc:
            writes.labels("failed").inc()
            if confirmed:
                raise LedgerError(
                    f"the write of {kind}/{key} was confirmed but not read back within "
                    f"{self._timeout:g}s: it is applied once read"
                ) from None
            why = str(exc) if isinstance(exc, LedgerError) else f"within {self._timeout:g}s"
            raise LedgerError(
                f"RabbitMQ did not confirm the write of {kind}/{key} ({why}): it may "
                "still be applied, on every node alike, or not at all; it is not sent again"
            ) from None
        finally:
            self._waiting.pop(seq, None)
        writes.labels("applied").inc()

    async def close(self) -> None:
        """Stops reading, fails the puts still waiting, disconnects. Idempotent."""
        if self._closed:
            return
        self._closed = True
        first = self._first_caught_up
        if first is not None and not first.done():
            first.set_exception(LedgerError("the ledger was closed during start-up"))
            first.exception()  # retrieved: start() may not be waiting
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(LedgerError("the ledger was closed"))
        await self._link.close()

    # -- the table's size, kept as it changes ------------------------------------------

    def apply(self, kind: str, key: str, value: bytes | None) -> None:
        held = self.get(kind, key)
        super().apply(kind, key, value)
        kept = self.get(kind, key)
        if kept is not held:
            self._table_bytes += _size(kind, key, kept) - _size(kind, key, held)
            self._metrics.ledger_entries.labels(kind).set(self.count(kind))

    def restore(self, table: dict[str, dict[str, bytes]]) -> None:
        before = set(self._table)
        super().restore(table)
        self._table_bytes = sum(
            entry_size(kind, key, value)
            for kind, entries in self._table.items()
            for key, value in entries.items()
        )
        for kind in before | set(self._table):
            self._metrics.ledger_entries.labels(kind).set(self.count(kind))

    @property
    def position(self) -> int:
        """The offset of the next record to read (0 before any)."""
        return self._replay.next or 0

    @property
    def table_bytes(self) -> int:
        """Bytes the table takes in a snapshot."""
        return self._table_bytes

    # -- reading -----------------------------------------------------------------------

    async def _mark_attached(self, raw: aiormq.abc.AbstractChannel) -> None:
        """Writes the mark of a new attachment: caught up once it is read back (a mark
        not confirmed closes the channel, and the link attaches and marks again)."""
        self._seq += 1
        self._mark = self._seq
        try:
            async with asyncio.timeout(self._timeout):
                await self._link.publish(raw, encode(Mark(self._writer, self._seq)))
        except (LedgerError, TimeoutError) as exc:
            # Attached, but the mark went with the link (or is late): closing the channel
            # has the link attach again, from where the reading got, and mark again.
            log.debug("ledger: the mark was not confirmed (%s); attaching again", exc)
            await self._link.close_quietly(raw)

    def _away(self) -> None:
        self._caught_up = False

    def _read(self, offset: int, body: bytes) -> None:
        record: Record | None
        try:
            record = decode(body)
        except ValueError as exc:
            log.error(
                "ledger: skipping the record at offset %d of %r: %s", offset, self.stream, exc
            )
            record = None
        self._replay.feed(offset, record, len(body) + _OVERHEAD)
        if (
            isinstance(record, Mark)
            and record.writer == self._writer
            and record.seq == self._mark
            and not self._replay.live
        ):
            first = self._replay.settle()
            log.error(
                "ledger: stream %r holds no whole snapshot covering what came before offset "
                "%d: writes older than that may be missing from the table (was "
                "ledger.max_bytes lowered?)",
                self.stream,
                first,
            )
        self._snapshots.write_if_due()

    def _on_record(self, record: Write | Mark) -> None:
        if record.writer != self._writer:
            return
        if isinstance(record, Mark):
            if record.seq == self._mark:
                self._caught_up = True
                first = self._first_caught_up
                if first is not None and not first.done():
                    first.set_result(None)
            return
        waiting = self._waiting.get(record.seq)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    # -- writing -----------------------------------------------------------------------

    def _check(self, kind: str, key: str, value: bytes | None) -> None:
        if not self._started or self._closed:
            raise LedgerError("the ledger is not started" if not self._closed else "closed")
        sizes = (
            ("kind", len(kind.encode()), MAX_KIND_BYTES),
            ("key", len(key.encode()), MAX_KEY_BYTES),
            ("value", len(value) if value is not None else 0, MAX_VALUE_BYTES),
        )
        for what, size, most in sizes:
            if size > most:
                raise LedgerError(f"a ledger {what} takes at most {most} bytes, not {size}")
        grows = _size(kind, key, value) - _size(kind, key, self.get(kind, key))
        if grows > 0 and self._table_bytes + grows > self.table_limit:
            raise LedgerError(
                f"the ledger's table would take {self._table_bytes + grows} bytes, past its "
                f"limit of {self.table_limit} (an eighth of ledger.max_bytes): raise "
                "ledger.max_bytes"
            )


def _size(kind: str, key: str, value: bytes | None) -> int:
    return 0 if value is None else entry_size(kind, key, value)
