"""RabbitMQ as the source and the log: one stream queue, read whole by every node.

:meth:`RabbitMqLog.start` connects (:mod:`~tidings.log.broker`), checks the application's
exchange and declares the stream queue and its bindings (:mod:`~tidings.log.topology`),
then reads the stream with manual acknowledgements and ``amqp.prefetch``: the consumer
(:mod:`~tidings.log.tail`) hands what it reads to the inbox (:mod:`~tidings.log.inbox`),
which gives the node batches of records in position order; the supervisor
(:mod:`~tidings.log.supervisor`) attaches the consumer at start-up and after every loss,
and checks that the stream is still the one it read; the epoch keeper
(:mod:`~tidings.log.epoch`) names the stream's incarnation from the beacons in it.
Records the node could not route are copied to ``amqp.quarantine_exchange``
(:mod:`~tidings.log.quarantine`).

Past ranges are read again over the stream protocol, on connections of their own
(:mod:`~tidings.log.scan`), for recoveries older than the node's history windows; with
AMQP 0-9-1 only (``amqp.reader = "amqp"``, or no plugin) the log does not scan.

``start`` returns once the warm-up window was delivered and the epoch is known: right
after attaching, the node writes a marker into the stream and waits to read it back.

:meth:`~RabbitMqLog.append` publishes to the application's exchange (persistent, with a
timestamp, confirmed by the broker); the event comes back through the stream like any
other. It also works without ``start``, for a process that only publishes.

*Failures at start-up* raise :class:`SourceError` with one line naming the setting to
change: unreachable broker (retried with backoff when ``amqp.retry_on_start``), refused
login, an exchange or queue that exists with other settings. Once connected, losing the
broker is never fatal: ``start`` and the running log wait for the robust connection,
logging what they wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from aiormq.exceptions import AMQPError, PublishError

from tidings.config import AmqpSettings
from tidings.log.addresses import AddressRing, follow_ring
from tidings.log.base import Log, LogConsumer, ScanUnavailable
from tidings.log.broker import SourceError, connect, describe
from tidings.log.epoch import EpochKeeper
from tidings.log.inbox import Inbox
from tidings.log.probe import StreamReader
from tidings.log.quarantine import Quarantine
from tidings.log.scan import StreamScan
from tidings.log.supervisor import Supervisor
from tidings.log.tail import Tail
from tidings.log.topology import declare_topology, reaches_stream
from tidings.record import Record

__all__ = ["RabbitMqLog", "SourceError"]


class RabbitMqLog(Log):
    """The log kept in a RabbitMQ stream queue.

    Args:
        settings: the ``[amqp]`` settings; ``url`` or ``urls`` must be set.
        clock: wall-clock time in seconds; stamps records that carry no timestamp and
            times beacons.
        logger: where to log; ``tidings.log.rabbitmq`` by default.
        beacon_interval: seconds between epoch beacons (see :mod:`tidings.log.epoch`).
        reconnect_interval: seconds between reconnection attempts of the robust connection.
        connect_timeout: seconds to wait for the broker when connecting.
        operation_timeout: seconds to wait for any broker reply or publish confirmation.
        connection_name: shown by ``rabbitmqctl list_connections`` and the management UI.
        quarantine_backlog: copies waiting for the quarantine exchange beyond which new
            ones are dropped (and logged), so a broker outage cannot grow memory.
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
        if not settings.addresses:
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
        # The exchange ``append`` publishes to: the topology's, or one opened by ``append``
        # alone when the log is used only to publish (``tidings publish``).
        self._exchange: AbstractExchange | None = None
        self._opening = asyncio.Lock()
        self._started = False
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._first_ready: asyncio.Future[None] | None = None
        # The parts that read, once start() has built them.
        self._epochs: EpochKeeper | None = None
        self._inbox: Inbox | None = None
        self._tail: Tail | None = None
        self._supervisor: Supervisor | None = None
        self._quarantine: Quarantine | None = None
        self._scan: StreamScan | None = None

    # -- the Log interface -------------------------------------------------------------

    @property
    def epoch(self) -> str:
        """The stream's epoch; "" until :meth:`start` has returned."""
        epochs = self._epochs
        return (epochs.epoch if epochs is not None else None) or ""

    @property
    def ready(self) -> bool:
        """True while connected and caught up with the stream."""
        return self._supervisor is not None and self._supervisor.ready and not self._closed

    @property
    def position(self) -> int:
        """The last position read, records and control messages alike; 0 before any."""
        return self._inbox.consumed + 1 if self._inbox is not None else 0

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
        s, warm_seconds = self._settings, max(0.0, warm_seconds)
        self._first_ready = asyncio.get_running_loop().create_future()
        try:
            async with self._opening:
                connection = self._conn or await self._connect()
                self._conn = connection
            topology = await declare_topology(
                connection, s, op_timeout=self._timeout, logger=self._log
            )
            self._exchange = topology.exchange
            reader = StreamReader(connection, s.stream, s.prefetch, self._timeout)
            epochs = self._epochs = EpochKeeper(
                reader,
                topology.publish,
                s.stream,
                clock=self._clock,
                beacon_interval=self._beacon_interval,
                timeout=self._timeout,
                logger=self._log,
            )
            inbox = self._inbox = Inbox(
                consumer,
                s.stream,
                s.prefetch,
                clock=self._clock,
                on_beacon=epochs.on_beacon,
                logger=self._log,
            )
            tail = self._tail = Tail(
                s,
                inbox,
                mark=epochs.mark,
                on_lost=self._on_lost,
                timeout=self._timeout,
                name=self._connection_name,
                logger=self._log,
            )
            await tail.open()
            if tail.reader == "stream":
                self._scan = StreamScan(
                    s,
                    timeout=self._timeout,
                    name=f"{self._connection_name}-scan",
                    logger=self._log,
                )
            self._supervisor = Supervisor(
                s,
                topology,
                reader,
                tail,
                inbox,
                epochs,
                self._first_ready,
                warm_seconds=warm_seconds,
                reconnect_interval=self._reconnect_interval,
                timeout=self._timeout,
                logger=self._log,
            )
            if topology.quarantine is not None:
                self._quarantine = Quarantine(
                    topology.quarantine,
                    lambda: self.epoch,
                    backlog=self._quarantine_backlog,
                    timeout=self._timeout,
                    logger=self._log,
                )
            self._spawn(self._supervisor.run(), "supervise")
            self._spawn(epochs.refresh(lambda: self.ready, lambda: inbox.consumed), "beacons")
            if self._quarantine is not None:
                self._spawn(self._quarantine.run(), "quarantine")
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

    @property
    def scans(self) -> bool:
        """True while ready and the stream protocol is available."""
        return self._scan is not None and self.ready

    def scan(self, after: int, until: int) -> AsyncGenerator[Sequence[Record], None]:
        """Reads ``(after, until]`` again over the stream protocol (see
        :mod:`tidings.log.scan`).

        Raises:
            RangeGone: the stream's retention removed position ``after + 1``.
            ScanUnavailable: no stream protocol, or the log is not started or closed.
            TimeoutError, OSError, rstream.ServerError: the broker did not serve the range.
        """
        if self._scan is None or self._closed:
            raise ScanUnavailable("the stream protocol is not available")
        return self._scan.scan(after, until)

    def quarantine(self, record: Record, kind: str, reason: str) -> None:
        """Queues a copy of ``record`` for ``amqp.quarantine_exchange`` (no-op if unset).

        See :mod:`tidings.log.quarantine`; failures are counted in
        :attr:`quarantine_failed`.
        """
        if self._quarantine is None or self._closed:
            return
        self._quarantine.put(record, kind, reason)

    async def close(self) -> None:
        """Stops consuming, sends pending quarantine copies (briefly), disconnects.

        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        if self._first_ready is not None and not self._first_ready.done():
            self._first_ready.set_exception(SourceError("the log was closed during start-up"))
            self._first_ready.exception()  # mark as retrieved: start() may not be waiting
        current = asyncio.current_task()
        tasks: list[asyncio.Future[Any]] = [t for t in self._tasks if t is not current]
        if self._inbox is not None:
            tasks += self._inbox.pending_acks()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._quarantine is not None:
            await self._quarantine.close()
        if self._tail is not None:
            await self._tail.cancel()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await self._conn.close()

    # -- beyond the interface: what operators and benchmarks look at -------------------

    @property
    def reader(self) -> str:
        """How the stream is read: ``stream`` (the stream protocol) or ``amqp``."""
        return self._tail.reader if self._tail is not None else "amqp"

    @property
    def last_position(self) -> int:
        """Position of the last record handed to the consumer, 0 if none."""
        return self._inbox.last_position if self._inbox is not None else 0

    @property
    def last_record_time(self) -> float | None:
        """Its timestamp (seconds since the epoch), None if none: with ``clock()`` it
        gives the consumer lag."""
        return self._inbox.last_record_time if self._inbox is not None else None

    @property
    def quarantine_failed(self) -> int:
        """Quarantine copies that could not be published."""
        return self._quarantine.failed if self._quarantine is not None else 0

    # -- wiring ------------------------------------------------------------------------

    async def _connect(self) -> AbstractRobustConnection:
        ring = AddressRing(self._settings.addresses)
        connection = await connect(
            self._settings,
            ring,
            connect_timeout=self._connect_timeout,
            reconnect_interval=self._reconnect_interval,
            name=self._connection_name,
            logger=self._log,
        )
        if len(ring) > 1:
            self._spawn(follow_ring(connection, ring, self._reconnect_interval), "addresses")
        return connection

    async def _open_publisher(self) -> AbstractExchange:
        async with self._opening:
            if self._exchange is None:
                self._conn = self._conn or await self._connect()
                channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
                self._exchange = await channel.get_exchange(self._settings.exchange, ensure=False)
            return self._exchange

    def _on_lost(self, why: str, stream_gone: bool) -> None:
        if not self._closed and self._supervisor is not None:
            self._supervisor.lost(why, stream_gone)

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
