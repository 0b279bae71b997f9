"""RabbitMQ as the source and the log: one stream queue, read whole by every node.

What it does
------------
:meth:`RabbitMqLog.start` checks the application's exchange (tidings never redeclares a
different one), declares the stream queue (``x-queue-type: stream``, retention from
``amqp.stream_max_age`` and ``amqp.stream_max_bytes``), binds it with every
``amqp.bindings`` pattern and reads the stream with manual acknowledgements and
``amqp.prefetch`` (see :mod:`tidings.log.amqp` for the checks and their messages). A
record's position is its ``x-stream-offset`` plus one, the same on every node; plus one
because offsets start at 0 and position 0 means "none" to clients and to
:attr:`Log.position`. Messages that arrived together are handed over as one batch, in
position order, once per event-loop iteration. Acknowledgements follow ``on_records``
(so only what the hub has taken is acknowledged), one ``basic.ack(multiple)`` per quarter
of the prefetch: for a stream they are flow control, not progress.

:meth:`~RabbitMqLog.append` publishes to the application's exchange (persistent, with a
timestamp, confirmed by the broker); the event comes back through the stream like any
other. It also works without ``start``, for a process that only publishes.

Decisions
---------
*Two readers.* The log's consumer reads over RabbitMQ's stream protocol
(:mod:`tidings.log.stream_protocol`, about twice the messages per CPU second) when
``amqp.reader`` allows it; a read from "next" (no warm window) starts on AMQP 0-9-1 and
hands over at the following offset once caught up. Declaring, control messages, the checks
after a reconnect and the lock always use AMQP 0-9-1. With ``amqp.reader = "auto"`` a
broker without the plugin is read over AMQP 0-9-1 only (logged once at start-up).

*Warm-up.* The consumer attaches at ``x-stream-offset = "<N>s"`` (N = the warm seconds
rounded up; ``next`` for none), an interval the broker turns into a timestamp with its own
clock, so a node whose clock is off still reads the right window. Right after attaching,
the node writes a *marker* into the stream (:mod:`tidings.log.epoch`); ``start`` returns
when the consumer reads it back: everything the stream held at start-up, within the
window, was delivered before. The window works per stream chunk, so a few records just
older than it may come as well; the hub's own TTL trims them.

*Epoch.* Read from beacons in the stream, see :mod:`tidings.log.epoch`. At start-up the
warm-up read itself meets one: beacons are written about every ``beacon_interval`` while
any node runs, and the warm window (the longest history TTL) is normally longer than
``3 x beacon_interval``; with a shorter window that span is scanned separately. Only
without any beacon does the node scan from the stream's first message, and then take the
exclusive queue ``<stream>.epoch-lock`` as a lock, scan the recent span once more and
mint a new epoch, so that nodes starting together on a fresh stream agree. Every node
writes a beacon when it has not read one for ``beacon_interval`` (jittered): a running
cluster adds about one tiny message per interval. Records flow during the start-up read,
before the epoch is known: nobody is served before ``start`` returns. Only when no beacon
is left (no node ran for longer than the retention) does the epoch change without the
stream changing: clients are then told their recovery failed, true by then anyway.

*Resume.* The stream is consumed through aiormq's ``basic_consume`` on a channel of
aio-pika's robust connection, not through aio-pika's robust consumer: that one would be
restored with its original arguments, i.e. the start-up window, and deliver records
twice. When the channel or the connection drops, ``ready`` turns false, aio-pika
reconnects and restores the channel, QoS, exchange, queue and bindings, and the node
re-attaches at the offset after the last one it read (control messages included),
dropping anything at or below it. Its deliveries wait until the stream is known to be the
same: the stream's last chunk, written after the node's marker, must start beyond what the
node read (else offsets went backwards), and the message at the last offset read must be
the one read there (a fingerprint: body, routing key, headers, timestamp). Two small reads
instead of a scan. A stream deleted while the node reads it cancels the consumer
(``basic.cancel``): the node declares it again and resumes the same way. Another stream
gets a new epoch (scanned for, or minted), announced by ``on_epoch`` before any of its
records, which are then read from the warm window as at start-up. Only if retention
dropped the last offset read do the beacons decide. Clients stay connected throughout.

*Failures at start-up* raise :class:`SourceError` with one line naming the setting to
change: unreachable broker (retried with backoff when ``amqp.retry_on_start``), refused
login, an exchange or queue that exists with other settings. Nothing is redeclared to
"fix" it. Refused logins are not retried: waiting does not fix a password. Once
connected, losing the broker is never fatal: ``start`` and the running log wait for the
robust connection, logging what they wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import AMQPError, ChannelAccessRefused, PublishError

from tidings.config import AmqpSettings
from tidings.log.amqp import (
    SourceError,
    StreamLost,
    StreamReader,
    Topology,
    connect,
    declare_topology,
    describe,
    publish_to_stream,
    reaches_stream,
)
from tidings.log.base import Log, LogConsumer
from tidings.log.epoch import (
    Beacon,
    BeaconScan,
    Control,
    Marker,
    ScanResult,
    new_epoch,
)
from tidings.log.message import StreamMessage, control_of, decode, fingerprint, from_delivery
from tidings.log.stream_protocol import StreamProtocolReader
from tidings.record import Record

__all__ = ["RabbitMqLog", "SourceError"]

#: Headers :meth:`RabbitMqLog.quarantine` adds to the copy.
REJECT_KIND_HEADER = "x-tidings-reject-kind"
REJECT_REASON_HEADER = "x-tidings-reject-reason"
REJECT_POSITION_HEADER = "x-tidings-position"
REJECT_EPOCH_HEADER = "x-tidings-epoch"

# The epoch scan covers this many beacon intervals: while any node runs, beacons are
# written at most about 1.6 intervals apart, so three leave room for lag and jitter.
_SCAN_INTERVALS = 3
# While the stream cannot be attached, say so again at most this often (seconds).
_RETRY_LOG_INTERVAL = 30.0
# Channel errors (not a lost connection) that start() retries before giving up.
_START_ATTEMPTS = 10


class RabbitMqLog(Log):
    """The log kept in a RabbitMQ stream queue.

    Args:
        settings: the ``[amqp]`` settings; ``url`` must be set.
        clock: wall-clock time in seconds; stamps records that carry no timestamp and
            times beacons.
        logger: where to log; ``tidings.log.rabbitmq`` by default.
        beacon_interval: seconds between epoch beacons (see the module docstring).
        reconnect_interval: seconds between reconnection attempts of the robust connection.
        connect_timeout: seconds to wait for the broker when connecting.
        operation_timeout: seconds to wait for any broker reply or publish confirmation.
        connection_name: shown by ``rabbitmqctl list_connections`` and the management UI.
        quarantine_backlog: copies waiting for the quarantine exchange beyond which new
            ones are dropped (and logged), so a broker outage cannot grow memory.

    Attributes:
        last_position: position of the last record handed to the consumer, 0 if none.
        last_record_time: its timestamp (seconds since the epoch), None if none: with
            ``clock()`` it gives the consumer lag for metrics.
        quarantine_failed: quarantine copies that could not be published.
    """

    def __init__(
        self,
        settings: AmqpSettings,
        *,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        beacon_interval: float = 30.0,
        reconnect_interval: float = 1.0,
        connect_timeout: float = 5.0,
        operation_timeout: float = 10.0,
        connection_name: str = "tidings",
        quarantine_backlog: int = 10_000,
    ) -> None:
        if not settings.url:
            raise SourceError("amqp.url is not set: the RabbitMQ log needs a broker")
        self._settings = settings
        self._clock = clock
        self._log = logger or logging.getLogger(__name__)
        self._beacon_interval = beacon_interval
        self._reconnect_interval = reconnect_interval
        self._connect_timeout = connect_timeout
        self._timeout = operation_timeout
        self._connection_name = connection_name
        self._quarantine_backlog = quarantine_backlog

        self._conn: AbstractRobustConnection | None = None
        self._topology: Topology | None = None
        self._reader: StreamReader | None = None
        # The exchange ``append`` publishes to: the topology's, or one opened by ``append``
        # alone when the log is used only to publish (``tidings publish``).
        self._exchange: AbstractExchange | None = None
        self._opening = asyncio.Lock()
        self._consumer: LogConsumer | None = None
        self._warm_seconds = 0.0
        self._epoch: str | None = None
        self._ready = False
        self._started = False
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._acks: set[asyncio.Future[Any]] = set()
        self._first_ready: asyncio.Future[None] | None = None
        self._need_attach = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None
        self._queue_lost = False

        # The current consumer: its channel, its tag, and what it delivered not yet handed over.
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._tag: str | None = None
        # The stream protocol reader (None: AMQP 0-9-1 only) and whether it is the one
        # reading now; see _consume.
        self._fast: StreamProtocolReader | None = None
        self._via_stream = False
        self._inbox: list[StreamMessage] = []
        self._ack_target: DeliveredMessage | None = None
        self._flush_scheduled = False
        self._hold = True
        self._consumed = -1
        self._unacked = 0
        self._ack_every = max(1, settings.prefetch // 4)
        self._last_print: int | None = None
        self._awaited_marker: str | None = None
        self._caught_up: asyncio.Future[None] | None = None
        self._warm_beacon: str | None = None
        self._last_beacon_at = 0.0
        self._conflicts: set[str] = set()

        self._quarantine: deque[tuple[Record, str, str]] = deque()
        self._quarantine_wakeup = asyncio.Event()

        self.last_position = 0
        self.last_record_time: float | None = None
        self.quarantine_failed = 0

    # -- the Log interface -------------------------------------------------------------

    @property
    def epoch(self) -> str:
        """The stream's epoch; "" until :meth:`start` has returned."""
        return self._epoch or ""

    @property
    def ready(self) -> bool:
        """True while connected and caught up with the stream."""
        return self._ready and not self._closed

    @property
    def position(self) -> int:
        """The last position read, records and control messages alike; 0 before any."""
        return self._consumed + 1

    async def start(self, consumer: LogConsumer, warm_seconds: float) -> None:
        """Connects, checks and declares the topology, delivers the warm-up window.

        Raises:
            SourceError: the broker is unreachable (after retrying with
                ``amqp.retry_on_start``), refuses the login, or has an exchange or queue
                set up otherwise than the settings say.
        """
        if self._started:
            raise RuntimeError("RabbitMqLog.start() was already called")
        self._started = True
        self._consumer = consumer
        self._warm_seconds = max(0.0, warm_seconds)
        loop = asyncio.get_running_loop()
        self._first_ready = loop.create_future()
        try:
            async with self._opening:
                connection = self._conn or await self._connect()
                self._conn = connection
            self._topology = await declare_topology(
                connection, self._settings, op_timeout=self._timeout, logger=self._log
            )
            self._exchange = self._topology.exchange
            self._reader = StreamReader(
                connection, self._settings.stream, self._settings.prefetch, self._timeout
            )
            self._fast = await self._open_fast_reader()
            self._spawn(self._supervise(), "supervise")
            self._spawn(self._refresh_beacons(), "beacons")
            if self._topology.quarantine is not None:
                self._spawn(self._quarantine_worker(), "quarantine")
            self._need_attach.set()
            await self._first_ready
        except BaseException:
            await self.close()
            raise

    async def append(
        self, routing_key: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publishes one event to the application's exchange and waits for the broker.

        Works without :meth:`start` too (then it only connects, for publishing).

        Raises:
            SourceError: the routing key matches no binding, the broker cannot be
                reached, or it did not confirm the event within ``operation_timeout``.
            RuntimeError: the log is closed.
        """
        if self._closed:
            raise RuntimeError("the log is closed")
        if not reaches_stream(self._settings, routing_key):
            raise SourceError(
                f"routing key {routing_key!r} matches none of amqp.bindings "
                f"{self._settings.bindings}: the event would never reach the stream"
            )
        message = aio_pika.Message(
            body,
            headers=dict(headers or {}),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=datetime.fromtimestamp(self._clock(), UTC),
        )
        exchange = self._exchange or await self._open_publisher()
        try:
            async with asyncio.timeout(self._timeout):
                await exchange.publish(message, routing_key=routing_key, mandatory=True)
        except PublishError:
            raise SourceError(
                f"RabbitMQ routed the event {routing_key!r} to no queue: is the stream "
                f"{self._settings.stream!r} bound to exchange {self._settings.exchange!r}?"
            ) from None
        except TimeoutError:
            raise SourceError(
                f"RabbitMQ did not confirm the event within {self._timeout:g}s "
                "(connection lost or broker overloaded)"
            ) from None
        except (AMQPError, ConnectionError, RuntimeError) as exc:
            raise SourceError(f"could not publish the event: {describe(exc)}") from exc

    async def _open_publisher(self) -> AbstractExchange:
        async with self._opening:
            if self._exchange is None:
                self._conn = self._conn or await self._connect()
                channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
                self._exchange = await channel.get_exchange(self._settings.exchange, ensure=False)
            return self._exchange

    def quarantine(self, record: Record, kind: str, reason: str) -> None:
        """Queues a copy of ``record`` for ``amqp.quarantine_exchange`` (no-op if unset).

        The copy has the original body, headers and routing key plus
        ``x-tidings-reject-kind``, ``x-tidings-reject-reason``, ``x-tidings-position`` and
        ``x-tidings-epoch``. It is sent in the background; a copy that cannot be sent is
        logged and counted in :attr:`quarantine_failed`, never dropped silently.
        """
        if self._topology is None or self._topology.quarantine is None or self._closed:
            return
        if len(self._quarantine) >= self._quarantine_backlog:
            self.quarantine_failed += 1
            self._log.error(
                "quarantine backlog full (%d): copy of position %d (%s) dropped",
                self._quarantine_backlog,
                record.position,
                kind,
            )
            return
        self._quarantine.append((record, kind, reason))
        self._quarantine_wakeup.set()

    async def close(self) -> None:
        """Stops consuming, sends pending quarantine copies (briefly), disconnects.

        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._ready = False
        if self._first_ready is not None and not self._first_ready.done():
            self._first_ready.set_exception(SourceError("the log was closed during start-up"))
            self._first_ready.exception()  # mark as retrieved: start() may not be waiting
        current = asyncio.current_task()
        tasks: list[asyncio.Future[Any]] = [t for t in self._tasks if t is not current]
        tasks += self._acks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._quarantine and self._conn is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._timeout, 2.0)):
                    await self._send_quarantined()
        if self._quarantine:
            self.quarantine_failed += len(self._quarantine)
            self._log.error("closing with %d quarantine copies unsent", len(self._quarantine))
            self._quarantine.clear()
        await self._cancel_consumer()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await self._conn.close()

    @property
    def reader(self) -> str:
        """How the stream is read: ``stream`` (the stream protocol) or ``amqp``."""
        return "stream" if self._fast is not None else "amqp"

    async def _open_fast_reader(self) -> StreamProtocolReader | None:
        """The stream protocol reader, as ``amqp.reader`` asks and the broker allows.

        Raises:
            SourceError: ``amqp.reader`` is ``stream`` and the protocol is not reachable.
        """
        mode = self._settings.reader
        if mode == "amqp":
            return None
        reader = StreamProtocolReader(
            self._settings,
            on_message=self._on_stream_message,
            on_lost=self._on_stream_lost,
            timeout=self._timeout,
            name=self._connection_name,
            logger=self._log,
        )
        try:
            await reader.probe()
        except Exception as exc:
            if mode == "stream":
                raise SourceError(
                    f"cannot reach RabbitMQ's stream protocol at {reader.address} "
                    f"({describe(exc)}): enable the rabbitmq_stream plugin, check "
                    'amqp.stream_port, or set amqp.reader = "amqp"'
                ) from None
            self._log.warning(
                "RabbitMQ's stream protocol is not reachable at %s (%s): reading stream %r "
                "over AMQP 0-9-1, about half as fast (enable the rabbitmq_stream plugin, "
                'or set amqp.reader = "amqp")',
                reader.address,
                describe(exc),
                self._settings.stream,
            )
            return None
        self._log.info(
            "reading stream %r over the stream protocol at %s",
            self._settings.stream,
            reader.address,
        )
        return reader

    async def _connect(self) -> AbstractRobustConnection:
        return await connect(
            self._settings,
            connect_timeout=self._connect_timeout,
            reconnect_interval=self._reconnect_interval,
            name=self._connection_name,
            logger=self._log,
        )

    # -- attaching the consumer --------------------------------------------------------

    async def _supervise(self) -> None:
        """Attaches the consumer at start-up and whenever it was lost, until closed."""
        assert self._first_ready is not None
        loop = asyncio.get_running_loop()
        failures, warned_at = 0, -_RETRY_LOG_INTERVAL
        while True:
            await self._need_attach.wait()
            self._need_attach.clear()
            try:
                await self._attach()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._ready = False
                failures += 1
                if not self._first_ready.done() and _fatal_at_start(exc, failures):
                    self._first_ready.set_exception(
                        exc
                        if isinstance(exc, SourceError)
                        else SourceError(
                            f"cannot read stream {self._settings.stream!r}: {describe(exc)}"
                        )
                    )
                    return
                # aio-pika logs each reconnection attempt already; one line now and then.
                quiet = loop.time() - warned_at < _RETRY_LOG_INTERVAL
                warned_at = warned_at if quiet else loop.time()
                self._log.log(
                    logging.DEBUG if quiet else logging.WARNING,
                    "stream %r not attached (%s); retrying (attempt %d)",
                    self._settings.stream,
                    describe(exc),
                    failures,
                )
                self._need_attach.set()
                await asyncio.sleep(self._reconnect_interval)
            else:
                if failures:
                    self._log.info(
                        "stream %r resumed after position %d",
                        self._settings.stream,
                        self.position,
                    )
                failures, warned_at = 0, -_RETRY_LOG_INTERVAL
                if not self._first_ready.done():
                    self._first_ready.set_result(None)

    async def _attach(self) -> None:
        """(Re)starts the consumer; returns once it caught up with the tail and knows the
        epoch.

        Raises:
            StreamLost: the channel or the stream went away meanwhile.
        """
        assert self._topology is not None
        topology = self._topology
        self._ready = False
        self._lost = asyncio.get_running_loop().create_future()
        if not self._hold:
            self._flush()  # what the lost consumer had delivered is still good
        self._hold = True
        self._inbox.clear()
        await self._cancel_consumer()
        await topology.consume.ready()
        if self._queue_lost:
            self._log.warning("stream %r was deleted; declaring it again", self._settings.stream)
            await topology.queue.declare(timeout=self._timeout)
            for pattern in self._settings.bindings:
                await topology.queue.bind(
                    self._settings.exchange, routing_key=pattern, timeout=self._timeout
                )
            self._queue_lost = False
        channel = await topology.consume.get_underlay_channel()

        if self._consumed < 0:
            # Start-up: nobody is served before start() returns, so records flow at once
            # and the epoch is learnt on the way, from a beacon in the warm window.
            marker = await self._start_warm(channel)
            await self._catch_up(marker)
            await self._learn_epoch(marker)
            await self._hand_over(channel)
            self._ready = True
            return

        # Resuming: deliveries wait until the stream is known to be the same one.
        await self._consume(channel, self._consumed + 1)
        marker = await self._mark()
        same = await self._same_stream()
        if same is None and self._epoch is not None:
            # The last message read is gone (retention): only the beacons can tell.
            same = await self._discover(marker, None) == self._epoch
            if same:
                self._log.warning(
                    "stream %r: retention dropped offsets this node had not read yet; "
                    "resuming after a gap",
                    self._settings.stream,
                )
        if same is not False:
            await self._catch_up(marker)
            await self._learn_epoch(marker)
            self._ready = True
            return

        # Another stream under the same name: a new epoch, announced before its records.
        old = self._epoch
        await self._cancel_consumer()
        self._inbox.clear()
        epoch = await self._discover(marker, old)
        self._log.warning(
            "stream %r was recreated: epoch %s -> %s, history restarts",
            self._settings.stream,
            old,
            epoch,
        )
        self._epoch = epoch
        self._consumed = -1
        self._last_print = None
        self.last_position = 0
        self.last_record_time = None
        self._notify_epoch(epoch)
        await self._catch_up(await self._start_warm(channel))
        await self._hand_over(channel)
        self._ready = True

    async def _mark(self) -> Marker:
        """Writes a fresh marker at the stream's tail."""
        marker = Marker.new()
        await self._publish_control(marker.headers())
        return marker

    async def _catch_up(self, marker: Marker) -> None:
        """Lets deliveries flow and waits until the consumer read ``marker``."""
        assert self._lost is not None
        self._awaited_marker = marker.id
        caught_up = self._caught_up = asyncio.get_running_loop().create_future()
        self._hold = False
        self._schedule_flush()
        await asyncio.wait((caught_up, self._lost), return_when=asyncio.FIRST_COMPLETED)
        if not caught_up.done():
            raise StreamLost("the consumer was lost while catching up")

    async def _same_stream(self) -> bool | None:
        """Whether the stream is the one this node read up to ``_consumed``.

        False when it is shorter (the last chunk, written after this node's marker, starts
        at or below that offset: offsets went backwards) or holds another message at that
        offset; None when retention dropped that offset.
        """
        assert self._reader is not None
        tail = await self._reader.tail()
        if tail <= self._consumed:
            self._log.warning(
                "stream %r went backwards (tail at offset %d, read up to %d)",
                self._settings.stream,
                tail,
                self._consumed,
            )
            return False
        offset, print_ = await self._reader.read(
            self._consumed, lambda offset, message: (offset, fingerprint(message))
        )
        if offset != self._consumed:
            return None
        if print_ != self._last_print:
            self._log.warning(
                "stream %r holds another message at offset %d than this node read there",
                self._settings.stream,
                offset,
            )
            return False
        return True

    async def _learn_epoch(self, marker: Marker) -> None:
        """Sets the epoch, if unknown, from the warm-up's first beacon or by discovery."""
        if self._epoch is not None:
            return
        if self._warm_beacon is not None:
            self._epoch = self._warm_beacon
            return
        # A warm window at least as long as the scan window has been scanned already.
        window = self._warm_seconds < self._beacon_interval * _SCAN_INTERVALS
        self._epoch = await self._discover(marker, None, window=window)

    async def _start_warm(self, channel: aiormq.abc.AbstractChannel) -> Marker:
        """Starts the consumer at the warm window; returns the marker that ends it.

        The window is counted back by the broker's clock. Over the stream protocol the
        marker is written first: its chunk gives the broker's time.
        """
        if self._fast is not None and self._warm_seconds > 0:
            marker = await self._mark()
            if await self._subscribe_fast(channel, self._fast.subscribe_since(self._warm_seconds)):
                return marker
            # The window of AMQP 0-9-1 reaches past the marker just written: it is read.
            await self._consume(channel, self._warm_offset())
            return marker
        await self._consume(channel, self._warm_offset())
        return await self._mark()

    async def _hand_over(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Moves a caught-up AMQP 0-9-1 consumer to the stream protocol, if there is one
        (a read from "next", or after the stream protocol failed once)."""
        if self._fast is None or self._via_stream:
            return
        await self._cancel_consumer()
        self._flush()  # what the AMQP consumer delivered before its cancel-ok
        await self._consume(channel, self._consumed + 1)

    async def _consume(self, channel: aiormq.abc.AbstractChannel, offset: int | str) -> None:
        """Starts the consumer at ``offset``: over the stream protocol when it is a
        number and the protocol is available, else over AMQP 0-9-1 on ``channel``."""
        if (
            isinstance(offset, int)
            and self._fast is not None
            and await self._subscribe_fast(channel, self._fast.subscribe(offset))
        ):
            return
        self._via_stream = False
        self._watch(channel)
        tag = f"tidings-{new_epoch()}"
        self._tag = tag
        await channel.basic_consume(
            self._settings.stream,
            self._on_delivery,
            arguments={"x-stream-offset": offset},
            consumer_tag=tag,
            timeout=self._timeout,
        )

    async def _subscribe_fast(
        self, channel: aiormq.abc.AbstractChannel, subscribing: Coroutine[Any, Any, None]
    ) -> bool:
        """Awaits a stream protocol subscription; False if it failed and AMQP 0-9-1 is to
        read instead (``amqp.reader = "auto"``).

        Raises:
            StreamLost: it failed and ``amqp.reader`` is ``stream``.
        """
        try:
            await subscribing
        except Exception as exc:
            if self._settings.reader == "stream":
                raise StreamLost(f"stream protocol: {describe(exc)}") from exc
            self._log.warning(
                "stream %r: the stream protocol failed (%s); reading over AMQP 0-9-1 "
                "until the next reconnect",
                self._settings.stream,
                describe(exc),
            )
            return False
        self._via_stream = True
        self._watch(channel)
        return True

    def _watch(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Notices when ``channel`` closes or its consumer is cancelled."""
        if channel is not self._underlay:
            self._underlay = channel
            channel.on_consumer_cancel_callbacks.add(self._on_cancelled)
            channel.closing.add_done_callback(
                lambda _: self._on_lost(channel, "connection or channel closed")
            )

    async def _cancel_consumer(self) -> None:
        tag, channel = self._tag, self._underlay
        self._tag = None
        # What the old consumer left unacknowledged is its channel's business, not the next's.
        self._ack_target = None
        self._unacked = 0
        if self._fast is not None:
            self._via_stream = False
            await self._fast.cancel()
        if tag is not None and channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.basic_cancel(tag, timeout=self._timeout)

    def _on_cancelled(self, frame: aiormq.spec.Basic.Cancel) -> None:
        if frame.consumer_tag == self._tag and self._underlay is not None:
            self._queue_lost = True
            self._on_lost(self._underlay, "consumer cancelled by the broker")

    def _on_stream_lost(self, why: str, stream_changed: bool) -> None:
        if self._closed:
            return
        if stream_changed:
            # Deleted, or moved: _attach declares it again (a no-op if it exists).
            self._queue_lost = True
        self._mark_lost(why)

    def _on_lost(self, channel: aiormq.abc.AbstractChannel, why: str) -> None:
        if self._closed or channel is not self._underlay:
            return
        self._mark_lost(why)

    def _mark_lost(self, why: str) -> None:
        if self._ready:
            self._log.warning("stream %r: %s; clients stay connected", self._settings.stream, why)
        self._ready = False
        self._tag = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._need_attach.set()

    def _warm_offset(self) -> str:
        if self._warm_seconds <= 0:
            return "next"
        return f"{math.ceil(self._warm_seconds)}s"

    # -- the epoch ---------------------------------------------------------------------

    async def _discover(self, marker: Marker, distrust: str | None, window: bool = True) -> str:
        """The epoch of the stream as it is up to ``marker``, minted if it has none.

        Args:
            marker: written to the stream before; bounds every scan.
            distrust: an epoch whose beacons are not this stream's (see BeaconScan).
            window: scan the recent window first (skipped when it was just read).
        """
        result = ScanResult(None, -1)
        if window:
            result = await self._scan(self._scan_window(), marker.id, distrust)
        if result.beacon is None:
            self._log.info(
                "no epoch beacon in the last %s of stream %r; looking from its start",
                self._scan_window(),
                self._settings.stream,
            )
            result = await self._scan("first", marker.id, distrust)
        if result.beacon is not None:
            return result.beacon.epoch
        return await self._mint(distrust)

    async def _mint(self, distrust: str | None) -> str:
        """Mints the stream's epoch, under a lock so that concurrent nodes agree."""
        assert self._reader is not None
        lock_name = f"{self._settings.stream}.epoch-lock"
        lock = await self._reader.acquire(lock_name)
        try:
            # Another node may have minted while we waited: its beacon is recent.
            marker = Marker.new()
            await self._publish_control(marker.headers())
            result = await self._scan(self._scan_window(), marker.id, distrust)
            if result.beacon is not None:
                return result.beacon.epoch
            epoch = new_epoch()
            await self._publish_control(Beacon(epoch, result.position).headers())
            self._log.info("stream %r starts epoch %s", self._settings.stream, epoch)
            return epoch
        finally:
            await self._reader.release(lock, lock_name)

    def _scan_window(self) -> str:
        return f"{math.ceil(self._beacon_interval * _SCAN_INTERVALS)}s"

    async def _scan(self, offset: str, marker_id: str, distrust: str | None) -> ScanResult:
        assert self._reader is not None
        scan = BeaconScan(marker_id, distrust)
        stream = self._settings.stream
        result = await self._reader.read(
            offset,
            lambda position, message: scan.feed(position, control_of(message, stream)),
        )
        if scan.skipped:
            self._log.warning(
                "stream %r: skipped %d beacons of another incarnation", stream, scan.skipped
            )
        return result

    def _notify_epoch(self, epoch: str) -> None:
        assert self._consumer is not None
        try:
            self._consumer.on_epoch(epoch)
        except Exception:
            self._log.exception("the consumer failed on the new epoch %s", epoch)

    async def _refresh_beacons(self) -> None:
        """Writes a beacon when none was read for a beacon interval, so that one is
        always recent. Several nodes may write in the same interval: harmless."""
        while True:
            await asyncio.sleep(self._beacon_interval / 2 * random.uniform(0.8, 1.2))
            if not self.ready or self._epoch is None:
                continue
            if self._clock() - self._last_beacon_at < self._beacon_interval:
                continue
            self._last_beacon_at = self._clock()
            try:
                await self._publish_control(Beacon(self._epoch, self._consumed).headers())
            except Exception as exc:
                self._log.warning("could not write an epoch beacon: %s", describe(exc))

    async def _publish_control(self, headers: dict[str, Any]) -> None:
        assert self._topology is not None
        await publish_to_stream(
            self._topology.publish, self._settings.stream, headers, self._clock(), self._timeout
        )

    # -- delivering ----------------------------------------------------------------

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        # aiormq runs this in a task of its own per message; it only queues the message,
        # and one flush per loop iteration hands the whole batch over.
        if getattr(message.delivery, "consumer_tag", None) != self._tag:
            return
        read = from_delivery(message)
        if read is None:
            return
        self._inbox.append(read)
        self._ack_target = message
        self._unacked += 1
        self._schedule_flush()

    def _on_stream_message(self, message: StreamMessage) -> None:
        # Called by rstream for every message of a chunk; flushed like AMQP deliveries.
        self._inbox.append(message)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._hold and self._inbox:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Hands the received messages over in position order and acknowledges them."""
        self._flush_scheduled = False
        if self._hold or not self._inbox:
            return
        inbox, self._inbox = self._inbox, []
        decoded = decode(inbox, self._settings.stream, self._consumed, self._clock())
        if decoded.last is not None:
            # Remembered to recognise the stream after a reconnect (see _same_stream).
            self._last_print = fingerprint(decoded.last)
        self._consumed = decoded.consumed
        reached = False
        for offset, control in decoded.controls:
            reached = self._on_control(offset, control) or reached
        records = decoded.records
        if records:
            self.last_position = records[-1].position
            self.last_record_time = records[-1].timestamp
            assert self._consumer is not None
            try:
                self._consumer.on_records(records)
            except Exception:
                self._log.exception(
                    "the consumer failed on records %d..%d",
                    records[0].position,
                    records[-1].position,
                )
        if self._ack_target is not None and self._unacked >= self._ack_every:
            self._ack(self._ack_target)
        if reached:
            self._awaited_marker = None
            if self._caught_up is not None and not self._caught_up.done():
                self._caught_up.set_result(None)

    def _on_control(self, position: int, control: Control) -> bool:
        """Acts on a control message; True when it is the marker being waited for."""
        if isinstance(control, Marker):
            return control.id == self._awaited_marker
        if isinstance(control, Beacon):
            if control.is_stale(position):
                self._log.warning(
                    "stream %r: beacon at %d comes from a reader of another incarnation",
                    self._settings.stream,
                    position,
                )
            elif self._epoch is None:
                # Start-up: the first beacon of the warm window names the epoch.
                if self._warm_beacon is None:
                    self._warm_beacon = control.epoch
                self._last_beacon_at = self._clock()
            elif control.epoch == self._epoch:
                self._last_beacon_at = self._clock()
            elif control.epoch not in self._conflicts:
                self._conflicts.add(control.epoch)
                self._log.warning(
                    "stream %r: beacon at %d names epoch %s, this node keeps %s",
                    self._settings.stream,
                    position,
                    control.epoch,
                    self._epoch,
                )
        return False

    def _ack(self, last: DeliveredMessage) -> None:
        # Acknowledgements are a stream's flow control (it sends ``prefetch`` unacknowledged
        # messages at most), not a record of progress: the position is. One ack for a
        # quarter of the prefetch keeps the broker sending without an ack per batch; what
        # stays unacknowledged while the stream is quiet costs nothing.
        self._unacked = 0
        channel = last.channel
        if channel.is_closed:
            return
        ack = asyncio.ensure_future(channel.basic_ack(_delivery_tag(last), multiple=True))
        self._acks.add(ack)
        ack.add_done_callback(self._ack_done)

    def _ack_done(self, ack: asyncio.Future[Any]) -> None:
        self._acks.discard(ack)
        if not ack.cancelled():
            ack.exception()  # the channel closed meanwhile: the next consumer re-reads

    # -- quarantine --------------------------------------------------------------------

    async def _quarantine_worker(self) -> None:
        while True:
            await self._quarantine_wakeup.wait()
            self._quarantine_wakeup.clear()
            await self._send_quarantined()

    async def _send_quarantined(self) -> None:
        assert self._topology is not None and self._topology.quarantine is not None
        target = self._topology.quarantine
        while self._quarantine:
            record, kind, reason = self._quarantine[0]
            headers: dict[str, Any] = dict(record.headers)
            headers[REJECT_KIND_HEADER] = kind
            headers[REJECT_REASON_HEADER] = reason[:1000]
            headers[REJECT_POSITION_HEADER] = record.position
            headers[REJECT_EPOCH_HEADER] = self.epoch
            message = aio_pika.Message(
                record.body,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=datetime.fromtimestamp(record.timestamp, UTC),
            )
            try:
                async with asyncio.timeout(self._timeout):
                    await target.publish(message, routing_key=record.routing_key, mandatory=True)
            except PublishError:
                self.quarantine_failed += 1
                self._log.error(
                    "quarantine exchange %r has no queue bound: copy of position %d dropped",
                    target.name,
                    record.position,
                )
            except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
                self.quarantine_failed += 1
                self._log.error(
                    "could not copy position %d to quarantine exchange %r: %s",
                    record.position,
                    target.name,
                    describe(exc),
                )
            self._quarantine.popleft()

    # -- tasks -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        task.set_name(f"tidings-log-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None or self._closed:
            return
        # A background loop died: a bug, never an expected broker error.
        self._log.error("%s failed", task.get_name(), exc_info=exc)
        if self._first_ready is not None and not self._first_ready.done():
            self._first_ready.set_exception(SourceError(f"internal error: {exc!r}"))


def _delivery_tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None
    return tag


def _fatal_at_start(exc: BaseException, failures: int) -> bool:
    """Whether ``start`` gives up after this error instead of retrying.

    A refused permission does not fix itself. A stream that was just declared may refuse
    consumers for a moment ("does not have a replica on the local node", INTERNAL_ERROR),
    so other channel errors get a few attempts. A lost connection is waited out.
    """
    if isinstance(exc, SourceError | ChannelAccessRefused):
        return True
    if isinstance(exc, aiormq.exceptions.AMQPChannelError):
        return failures >= _START_ATTEMPTS
    return False
