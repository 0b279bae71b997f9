"""The events outbox: events for the application, published to ``amqp.events_exchange``.

:meth:`RabbitMqOutbox.emit` (the :class:`tidings.events.Outbox` interface) appends the
event to a bounded buffer and returns: it never awaits, so nothing that emits (the node
delivering to clients, a subscribe) ever waits for the broker. A background loop sends
the buffer in order as JSON (``application/json``, persistent), with publisher confirms,
up to :data:`IN_FLIGHT` at a time on its own robust connection; an event leaves the
buffer only once the broker confirmed it. When the broker is away, or does not confirm
within :data:`CONFIRM_TIMEOUT`, the loop keeps the events and sends them again, in the
same order, once aio-pika has reconnected; meanwhile new events keep being buffered.

Guarantees: events of one worker reach the exchange in the order they were emitted; an
event may reach it twice (its confirm was lost with the connection), never silently
zero times: one that does not fit (``amqp.events_buffer`` events already waiting) is
dropped and counted in ``tidings_outbox_events_total{result="dropped_overflow"}``, and
those still waiting when the worker stops (after :data:`CLOSE_TIMEOUT`) in
``result="dropped_shutdown"``. ``result="published"`` counts the confirmed ones and the
gauge ``tidings_outbox_buffered`` the waiting ones.

The exchange is declared at start-up as a durable topic exchange (the same declaration
twice is harmless); one that exists with another type or durability is refused with a
:class:`~tidings.log.broker.SourceError` naming ``amqp.events_exchange``. Events are
published without ``mandatory``: an exchange with no queue bound drops them, which is
the application's choice, not a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from tidings.config import AmqpSettings
from tidings.log.broker import SourceError, connect_beside, describe
from tidings.metrics import Metrics

__all__ = ["CLOSE_TIMEOUT", "CONFIRM_TIMEOUT", "IN_FLIGHT", "RabbitMqOutbox"]

log = logging.getLogger(__name__)

#: Events published before waiting for their confirms (one round trip per batch).
IN_FLIGHT = 256
#: Seconds to wait for a batch's confirms before sending it again.
CONFIRM_TIMEOUT = 10.0
#: Seconds :meth:`RabbitMqOutbox.close` keeps sending what is buffered.
CLOSE_TIMEOUT = 2.0


class RabbitMqOutbox:
    """Publishes events to ``amqp.events_exchange`` in the background (see the module).

    Args:
        settings: the ``[amqp]`` settings (broker, ``events_exchange``, ``events_buffer``).
        metrics: where the counts go.
        connection_name: shown by RabbitMQ for this connection.
    """

    def __init__(self, settings: AmqpSettings, metrics: Metrics, connection_name: str) -> None:
        if not settings.events_exchange:
            raise SourceError("amqp.events_exchange is not set")
        self._settings = settings
        self._exchange_name = settings.events_exchange
        self._metrics = metrics
        self._connection_name = connection_name
        self._buffer: deque[tuple[str, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._outcomes = metrics.outbox_events
        self._stalled = False

    @property
    def buffered(self) -> int:
        """Events waiting for the broker's confirm."""
        return len(self._buffer)

    def emit(self, routing_key: str, event: Mapping[str, Any]) -> None:
        """Queues ``event`` for ``routing_key``; drops (and counts) it when the buffer is full."""
        if len(self._buffer) >= self._settings.events_buffer:
            self._outcomes.labels("dropped_overflow").inc()
            return
        self._buffer.append((routing_key, orjson.dumps(event)))
        self._metrics.outbox_buffered.set(len(self._buffer))
        self._wakeup.set()

    async def start(self) -> None:
        """Connects, declares the exchange, starts the sending loop.

        Raises:
            SourceError: no broker, or the exchange exists with other settings.
        """
        name = f"{self._connection_name} events"
        connection, follower = await connect_beside(self._settings, name, log)
        self._connection = connection
        self._tasks = [] if follower is None else [follower]
        try:
            self._channel = await connection.channel(publisher_confirms=True)
            self._exchange = await self._channel.declare_exchange(
                self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            for task in self._tasks:
                task.cancel()
            await connection.close()
            raise SourceError(
                f"amqp.events_exchange {self._exchange_name!r} exists with other settings "
                f"than a durable topic exchange ({describe(exc)}): delete it or name another"
            ) from None
        self._tasks.append(asyncio.get_running_loop().create_task(self._run()))
        log.info("events outbox: publishing to exchange %r", self._exchange_name)

    async def close(self) -> None:
        """Sends what is buffered for :data:`CLOSE_TIMEOUT` at most, counts the rest as
        dropped, and disconnects."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._connection is None:
            return
        if self._buffer and not self._connection.is_closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    while self._buffer and await self._send_batch():
                        pass
        if self._buffer:
            log.error("events outbox: %d events unsent at shutdown", len(self._buffer))
            self._outcomes.labels("dropped_shutdown").inc(len(self._buffer))
            self._buffer.clear()
            self._metrics.outbox_buffered.set(0)
        await self._connection.close()
        self._connection = None

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not await self._send_batch():
                # The broker is away (aio-pika reconnects meanwhile) or slow: try the same
                # events again, in the same order, a moment later.
                await asyncio.sleep(self._settings.reconnect_interval)

    async def _send_batch(self) -> bool:
        """Publishes up to :data:`IN_FLIGHT` events from the head of the buffer and drops
        the confirmed prefix; False when any of them failed."""
        assert self._exchange is not None
        batch = [self._buffer[i] for i in range(min(IN_FLIGHT, len(self._buffer)))]
        exchange = self._exchange
        publishes = [
            exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=key,
            )
            for key, body in batch
        ]
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                results = await asyncio.gather(*publishes, return_exceptions=True)
        except TimeoutError:
            results = [TimeoutError()] * len(batch)
        confirmed = 0
        for result in results:
            if isinstance(result, BaseException):
                break
            confirmed += 1
        for _ in range(confirmed):
            self._buffer.popleft()
        if confirmed:
            self._outcomes.labels("published").inc(confirmed)
            self._metrics.outbox_buffered.set(len(self._buffer))
        if confirmed < len(batch):
            failure = results[confirmed]
            assert isinstance(failure, BaseException)
            if isinstance(failure, asyncio.CancelledError):
                raise failure
            if not self._stalled:  # once per outage, not once per retry
                self._stalled = True
                log.warning(
                    "events outbox: %d events wait for the broker (%s)",
                    len(self._buffer),
                    describe(failure),
                )
            return False
        if self._stalled:
            self._stalled = False
            log.info("events outbox: the broker confirms again")
        return True
