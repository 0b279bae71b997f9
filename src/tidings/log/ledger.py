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
like any other (below), and ``start`` still returns once caught up.

*Snapshots and retention.* The stream keeps ``ledger.max_bytes`` (its
``x-max-length-bytes``, in segments of a sixteenth of it, so the retention acts in
steps of that size). When the writes read since the last snapshot began pass a quarter
of ``max_bytes``, a ledger (after a random pause of up to ``snapshot_jitter`` seconds,
so that usually one does, if sometimes two) writes a snapshot: the whole table, in parts
of :data:`PART_BYTES`, with the offset of the last record it reflects. A replay from
wherever the stream now starts is then exact (:mod:`tidings.log.ledger_replay`): it
keeps the writes it reads until it has read a whole snapshot reflecting at least the
record before the first one read, restores it and applies the kept writes after the
offset it reflects. The last whole snapshot and what follows it take at most a quarter
(the writes between snapshots) plus two eighths (two snapshots of a full table), so the
retention never drops a snapshot still needed, with room for lag and per-message
overhead.

*Reconnects.* On the loss of the channel or the connection the ledger is not ready (and
``/readyz`` says so, through ``node.ready``); once aio-pika has reconnected it consumes
again from the offset after the last one read, writes a new mark and is ready again once
it has read it back: no write is lost or applied twice (records read before are skipped
by offset). Offsets do not always grow by one (RabbitMQ keeps some for itself): when the
first record after a reconnect comes past the offset asked for, the ledger holds what
comes while it reads the stream's first offset; past the one asked for too, the retention
dropped records it had not read, and it seeks a snapshot as at start-up.

*A deleted stream.* The table cannot be rebuilt from a stream deleted under the running
ledger (a new one would start empty, its offsets over): the broker cancels the consumer,
and the ledger logs an error and stops, not ready for good and refusing writes, until the
node is restarted. Do not delete the ledger's stream while nodes run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import uuid
from typing import Any

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed, PublishError

from tidings.config import AmqpSettings, LedgerSettings
from tidings.ledger import Ledger, LedgerError
from tidings.log.broker import SourceError, connect_beside, describe
from tidings.log.ledger_replay import Replay
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
    split_snapshot,
)
from tidings.metrics import Metrics

__all__ = ["PART_BYTES", "RabbitMqLedger", "stream_arguments"]

log = logging.getLogger(__name__)

#: Entries' bytes per snapshot message (well under RabbitMQ's message size limit).
PART_BYTES = 256 * 1024
#: Records the broker sends ahead of the acknowledgements.
PREFETCH = 1000
#: What RabbitMQ answers a declare that reaches a stream still being created.
NOT_CREATED_YET = "does not have a replica on the local node"
#: A record's bytes in the stream beyond its body (properties, chunk headers): counted
#: with every write, so small writes still bring the next snapshot in time.
_OVERHEAD = 128


def stream_arguments(amqp: AmqpSettings, ledger: LedgerSettings) -> dict[str, Any]:
    """The ledger's stream queue arguments: retention by size only (the table must not
    expire), segments of a sixteenth of it, the replicas of ``amqp.stream_replicas``."""
    arguments: dict[str, Any] = {
        "x-queue-type": "stream",
        "x-max-length-bytes": ledger.max_bytes,
        "x-stream-max-segment-size-bytes": ledger.max_bytes // 16,
    }
    if amqp.stream_replicas:
        arguments["x-initial-cluster-size"] = amqp.stream_replicas
    return arguments


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
        self._amqp = amqp
        self.stream = settings.stream_name(amqp)
        self._arguments = stream_arguments(amqp, settings)
        self._max_bytes = settings.max_bytes
        #: Most bytes the table may take (an eighth of ``ledger.max_bytes``).
        self.table_limit = settings.max_bytes // 8
        self._snapshot_every = settings.max_bytes // 4
        self._metrics = metrics or Metrics()
        self._name = name
        self._timeout = timeout
        self._jitter = snapshot_jitter
        self._part_bytes = part_bytes

        self._writer = uuid.uuid4().bytes
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._replay = Replay(self, self._on_record)
        self._table_bytes = 0
        self._conn: AbstractRobustConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # The channel of this attachment (None while away) and its mark.
        self._channel: AbstractChannel | None = None
        self._raw: aiormq.abc.AbstractChannel | None = None
        self._mark: int | None = None
        self._caught_up = False
        # A resumed attachment: the offset it asked for until its first record came, and
        # what it delivered while the ledger checks that nothing was dropped unread.
        self._resume: int | None = None
        self._held: list[tuple[int, bytes]] | None = None
        # The last delivery taken, acknowledged with all before it once per loop iteration.
        self._ack_tag = 0
        self._ack_due = False
        self._first_caught_up: asyncio.Future[None] | None = None
        #: Set once a channel consumes the stream (the first attachment at start-up).
        self._attached = asyncio.Event()
        self._snapshotting = False
        # Why the ledger stopped for good (its stream deleted), or None.
        self._gone: str | None = None
        self._started = False
        self._closed = False

    # -- the Ledger interface ----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while attached, caught up with the stream and exact."""
        return (
            self._raw is not None
            and self._caught_up
            and self._replay.live
            and not self._closed
            and self._gone is None
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
            connection, follower = await connect_beside(self._amqp, self._name, log)
            self._conn = connection
            if follower is not None:
                self._tasks.append(follower)
            failed: Exception | None = None
            try:
                await self._attach()
            except SourceError:
                raise
            except Exception as exc:
                # Workers of a node start together and declare a new stream at once:
                # RabbitMQ then refuses the declares that reach it while it is being
                # created (a channel error, or INTERNAL_ERROR closing the connection).
                # The loop of _run attaches again once the connection is back.
                log.info("ledger: cannot attach to stream %r yet (%s)", self.stream, describe(exc))
                failed = exc
            self._tasks.append(asyncio.get_running_loop().create_task(self._run()))
            if failed is not None:
                try:
                    async with asyncio.timeout(3 * self._timeout):
                        await self._attached.wait()
                except TimeoutError:
                    raise SourceError(
                        f"cannot set up the ledger's stream {self.stream!r}: {describe(failed)}"
                    ) from failed
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
        raw = self._raw
        if self._gone is not None:
            writes.labels("failed").inc()
            raise LedgerError(f"{self._gone}: the write of {kind}/{key} was not sent")
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
                await self._publish(raw, encode(Write(self._writer, seq, kind, key, value)))
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
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._raw = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await self._conn.close()

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

    # -- attaching and reading ---------------------------------------------------------

    async def _attach(self) -> None:
        """Opens a channel, declares the stream, consumes from the next offset, marks
        (a mark not confirmed closes the channel again: see _run).

        Raises:
            SourceError: the stream exists with other settings, or the user may not use it.
            Exception: the broker went away meanwhile (aiormq's errors, a bare Exception
                for a future failed at a close, TimeoutError).
        """
        assert self._conn is not None
        async with asyncio.timeout(self._timeout):
            channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        try:
            async with asyncio.timeout(self._timeout):
                raw = await channel.get_underlay_channel()
                await self._declare(raw)
                await raw.basic_qos(prefetch_count=PREFETCH)
                offset = self._replay.next
                self._caught_up = False
                self._resume, self._held = offset, None
                # Before the consume: deliveries may come before its reply is read.
                self._channel, self._raw = channel, raw
                tag = f"ledger-{uuid.uuid4().hex[:12]}"
                raw.on_consumer_cancel_callbacks.add(functools.partial(self._on_cancel, raw, tag))
                await raw.basic_consume(
                    self.stream,
                    functools.partial(self._on_message, raw),
                    arguments={"x-stream-offset": "first" if offset is None else offset},
                    consumer_tag=tag,
                )
                self._attached.set()
        except BaseException:
            self._channel = self._raw = None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await channel.close()
            raise
        self._seq += 1
        self._mark = self._seq
        try:
            async with asyncio.timeout(self._timeout):
                await self._publish(raw, encode(Mark(self._writer, self._seq)))
        except (LedgerError, TimeoutError) as exc:
            # Attached, but the mark went with the link (or is late): closing the channel
            # has the loop of _run attach again, from where the reading got, and mark again.
            log.debug("ledger: the mark was not confirmed (%s); attaching again", exc)
            await self._close_quietly(raw)

    async def _declare(self, raw: aiormq.abc.AbstractChannel) -> None:
        try:
            await raw.queue_declare(self.stream, durable=True, arguments=self._arguments)
        except ChannelPreconditionFailed as exc:
            if NOT_CREATED_YET in str(exc):
                raise  # another worker's declare is creating it: attach again (see start)
            replicas = self._arguments.get("x-initial-cluster-size", "none")
            raise SourceError(
                f"queue {self.stream!r} exists with other settings ({describe(exc)}): the "
                f"ledger needs a stream queue with x-max-length-bytes {self._max_bytes} "
                "(ledger.max_bytes), x-stream-max-segment-size-bytes "
                f"{self._max_bytes // 16} and x-initial-cluster-size {replicas} "
                "(amqp.stream_replicas); set those to the existing values or point "
                "ledger.stream at another name"
            ) from None
        except ChannelAccessRefused as exc:
            raise SourceError(
                f"the user in amqp.url may not declare queue {self.stream!r} "
                f"({describe(exc)}): grant it configure, write and read permissions on "
                "that name, or point ledger.stream at one it may use"
            ) from None

    async def _run(self) -> None:
        """Waits for the loss of the attachment, then attaches again, for ever."""
        while True:
            raw = self._raw
            if raw is not None:
                await asyncio.wait([raw.closing])
                self._lost(raw)
            if self._gone is not None:
                return
            try:
                await self._reattach()
            except SourceError as exc:
                log.error("ledger: %s", exc)
                await asyncio.sleep(self._amqp.reconnect_interval)
            except Exception as exc:  # aiormq fails futures with a bare Exception at a close
                log.debug("ledger: cannot attach yet (%s)", describe(exc))
                await asyncio.sleep(self._amqp.reconnect_interval)

    async def _reattach(self) -> None:
        assert self._conn is not None
        await self._conn.connected.wait()
        await self._attach()
        log.info("ledger: reading stream %r again from offset %s", self.stream, self._replay.next)

    def _on_cancel(
        self, raw: aiormq.abc.AbstractChannel, tag: str, frame: aiormq.spec.Basic.Cancel
    ) -> None:
        if frame.consumer_tag != tag or raw is not self._raw:
            return
        self._gone = f"the ledger's stream {self.stream!r} was deleted"
        log.error(
            "ledger: stream %r was deleted under it: the table cannot be rebuilt from a new "
            "one; the ledger stops (not ready, writes refused) until the node restarts",
            self.stream,
        )
        # The channel's closing wakes the loop in _run, which then stops.
        task = asyncio.get_running_loop().create_task(self._close_quietly(raw))
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _lost(self, raw: aiormq.abc.AbstractChannel) -> None:
        if raw is not self._raw:
            return
        self._raw = None
        self._caught_up = False
        # What was held back is read again from the same offset at the next attachment.
        self._resume = self._held = None
        log.warning(
            "ledger: lost stream %r; resuming from offset %s once reconnected",
            self.stream,
            self._replay.next,
        )
        channel, self._channel = self._channel, None
        if channel is not None:
            # So that aio-pika does not reopen it: the next attachment opens its own.
            task = asyncio.get_running_loop().create_task(self._close_quietly(channel))
            self._tasks.append(task)
            task.add_done_callback(self._forget)

    async def _close_quietly(self, channel: AbstractChannel | aiormq.abc.AbstractChannel) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await channel.close()

    def _forget(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _on_message(
        self, raw: aiormq.abc.AbstractChannel, message: aiormq.abc.DeliveredMessage
    ) -> None:
        # aiormq runs this in a task per message, started in delivery order: everything
        # up to the first await runs in stream order.
        if raw is not self._raw:
            return  # a delivery of an attachment already lost
        headers = message.header.properties.headers or {}
        offset = headers.get("x-stream-offset")
        if isinstance(offset, int):
            self._take(raw, offset, message.body)
        tag = getattr(message.delivery, "delivery_tag", None)
        if tag is not None:
            # One acknowledgement of everything taken per loop iteration, not one per record.
            self._ack_tag = tag
            if not self._ack_due:
                self._ack_due = True
                asyncio.get_running_loop().call_soon(self._ack, raw)

    def _ack(self, raw: aiormq.abc.AbstractChannel) -> None:
        self._ack_due = False
        if raw is not self._raw or raw.is_closed:
            return
        task = asyncio.get_running_loop().create_task(self._ack_now(raw, self._ack_tag))
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    async def _ack_now(self, raw: aiormq.abc.AbstractChannel, tag: int) -> None:
        with contextlib.suppress(Exception):
            await raw.basic_ack(tag, multiple=True)

    def _take(self, raw: aiormq.abc.AbstractChannel, offset: int, body: bytes) -> None:
        if self._held is not None:
            self._held.append((offset, body))
            return
        resume, self._resume = self._resume, None
        if resume is not None and offset > resume:
            # Either offsets RabbitMQ kept for itself, or records dropped by the retention
            # while away: the stream's first offset tells which.
            self._held = [(offset, body)]
            task = asyncio.get_running_loop().create_task(self._check_resume(raw, resume))
            self._tasks.append(task)
            task.add_done_callback(self._forget)
            return
        self._read(offset, body)

    async def _check_resume(self, raw: aiormq.abc.AbstractChannel, resume: int) -> None:
        try:
            first = await self._first_offset(raw)
        except Exception as exc:  # as in _run: any failure of the link
            log.debug("ledger: cannot read the stream's first offset (%s)", describe(exc))
            return  # the attachment is lost with its channel: resumed again later
        held = self._held
        if raw is not self._raw or held is None:
            return
        self._held = None
        if first > resume:
            # Offsets kept since ``resume`` were readable when the consumer started only
            # if the retention dropped them since (it only drops): assume the worst.
            log.warning(
                "ledger: the retention of stream %r dropped records not read yet (offsets "
                "%d to %d): seeking a snapshot",
                self.stream,
                resume,
                held[0][0] - 1,
            )
            self._replay.lost(held[0][0])
        for offset, body in held:
            self._read(offset, body)

    async def _first_offset(self, raw: aiormq.abc.AbstractChannel) -> int:
        """The first offset the stream holds, read by a consumer of one record."""
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            offset = (message.header.properties.headers or {}).get("x-stream-offset")
            if not got.done() and isinstance(offset, int):
                got.set_result(offset)

        tag = f"ledger-first-{uuid.uuid4().hex[:8]}"
        async with asyncio.timeout(self._timeout):
            await raw.basic_consume(
                self.stream, on_message, arguments={"x-stream-offset": "first"}, consumer_tag=tag
            )
            try:
                return await got
            finally:
                with contextlib.suppress(Exception):
                    await raw.basic_cancel(tag)

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
        self._snapshot_if_due()

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

    async def _publish(self, raw: aiormq.abc.AbstractChannel, body: bytes) -> None:
        """Publishes ``body`` to the stream and waits for the broker's confirm.

        Raises:
            LedgerError: refused, returned or lost with the connection.
        """
        properties = aiormq.spec.Basic.Properties(delivery_mode=2)
        try:
            confirm = await raw.basic_publish(
                body, routing_key=self.stream, mandatory=True, properties=properties
            )
        except PublishError:
            raise LedgerError(f"stream {self.stream!r} is gone (the write was returned)") from None
        except Exception as exc:  # aiormq fails a confirm with a bare Exception at a close
            raise LedgerError(describe(exc)) from exc
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            raise LedgerError(f"RabbitMQ refused the write ({type(confirm).__name__})")

    def _snapshot_if_due(self) -> None:
        if self._snapshotting or self._replay.since_snapshot < self._snapshot_every:
            return
        if not self.ready:
            return
        self._snapshotting = True
        task = asyncio.get_running_loop().create_task(self._snapshot())
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    async def _snapshot(self) -> None:
        try:
            await asyncio.sleep(random.uniform(0, self._jitter))
            raw = self._raw
            # Another ledger's snapshot began meanwhile (the count starts over), or the
            # broker went away: nothing to do now.
            if raw is None or not self.ready or self._replay.since_snapshot < self._snapshot_every:
                return
            assert self._replay.next is not None
            # Table and offset together, before any await: the parts reflect exactly it.
            parts = split_snapshot(
                self.snapshot(), self._replay.next - 1, uuid.uuid4().bytes, self._part_bytes
            )
            self._replay.since_snapshot = 0
            for part in parts:
                async with asyncio.timeout(self._timeout):
                    await self._publish(raw, encode(part))
            self._metrics.ledger_snapshots.inc()
            log.info(
                "ledger: wrote a snapshot of %d bytes in %d parts to %r",
                self._table_bytes,
                len(parts),
                self.stream,
            )
        except (LedgerError, TimeoutError) as exc:
            # Due again at the next record read: the count goes on from the threshold.
            self._replay.since_snapshot = max(self._replay.since_snapshot, self._snapshot_every)
            log.warning("ledger: the snapshot failed (%s); trying again", exc)
        finally:
            self._snapshotting = False


def _size(kind: str, key: str, value: bytes | None) -> int:
    return 0 if value is None else entry_size(kind, key, value)
