"""The relay: emulation commands to the worker holding their session, over RabbitMQ.

A client of an emulated transport posts its commands to ``/emulation``, which may be
served by any worker of any node. Each worker declares the direct exchange
``<amqp.exchange>.emulation`` (not durable, deleted with its last binding) and binds one
exclusive, auto-delete queue of its own to it, with its worker id as the binding key. A
worker that receives a post for another worker publishes it there with that id as the
routing key; the holder hands it to the session (:meth:`Emulation.deliver`).

The publish is *mandatory* and *confirmed*: when no queue is bound with that id (the
worker stopped, or restarted under a new id) the broker returns the message and the post
is answered 404, so the SDK reconnects at once; when the broker cannot be reached in
time, 503. A message waits in a queue at most :data:`MESSAGE_TTL`: a command older than
the SDK's call timeout is of no use to anyone.

Messages carry session ids, which are capabilities: they are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage

from tidings.config import AmqpSettings
from tidings.log.addresses import AddressRing, follow_ring
from tidings.log.broker import connect
from tidings.protocol.emulation import (
    BadEmulationRequest,
    EmulationRequest,
    decode_emulation_request,
    encode,
)
from tidings.transport.emulation import Emulation, RelayUnavailable, UnknownWorker

__all__ = ["MESSAGE_TTL", "PUBLISH_TIMEOUT", "RabbitMqRelay", "relay_exchange_name"]

log = logging.getLogger(__name__)

#: Seconds a forwarded command may wait in its worker's queue.
MESSAGE_TTL = 10.0
#: Seconds to wait for the broker's confirm of a forwarded command.
PUBLISH_TIMEOUT = 5.0


def relay_exchange_name(amqp: AmqpSettings) -> str:
    """The relay's exchange: ``<amqp.exchange>.emulation``."""
    return f"{amqp.exchange}.emulation"


class RabbitMqRelay:
    """One worker's end of the relay (a :class:`~tidings.transport.emulation.Relay`).

    Args:
        amqp: the broker settings (the same broker and credentials as the log).
        emulation: this worker's sessions, to which commands for it are delivered.
        max_frame_bytes: the largest command frame accepted (``client.max_frame_bytes``).
        connection_name: shown by RabbitMQ for this connection.
    """

    def __init__(
        self,
        amqp: AmqpSettings,
        emulation: Emulation,
        *,
        max_frame_bytes: int,
        connection_name: str,
    ) -> None:
        self._amqp = amqp
        self._emulation = emulation
        self._max_frame_bytes = max_frame_bytes
        self._connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._follow: asyncio.Task[None] | None = None

    @property
    def queue_name(self) -> str:
        """This worker's queue."""
        return f"{relay_exchange_name(self._amqp)}.{self._emulation.worker}"

    async def start(self) -> None:
        """Declares the exchange and this worker's queue, and consumes it."""
        ring = AddressRing(self._amqp.addresses)
        interval = self._amqp.reconnect_interval
        connection = await connect(
            self._amqp,
            ring,
            connect_timeout=5.0,
            reconnect_interval=interval,
            name=f"{self._connection_name} relay",
            logger=log,
        )
        self._connection = connection
        if len(ring) > 1:  # a cluster: reconnect to the next broker node when one goes
            self._follow = asyncio.get_running_loop().create_task(
                follow_ring(connection, ring, interval)
            )
        # Confirms, so that an unroutable command (no such worker) comes back as such.
        channel = await connection.channel(publisher_confirms=True)
        self._channel = channel
        exchange = await channel.declare_exchange(
            relay_exchange_name(self._amqp),
            aio_pika.ExchangeType.DIRECT,
            durable=False,
            auto_delete=True,
        )
        queue = await channel.declare_queue(
            self.queue_name,
            exclusive=True,
            auto_delete=True,
            arguments={"x-message-ttl": int(MESSAGE_TTL * 1000)},
        )
        await queue.bind(exchange, routing_key=self._emulation.worker)
        await queue.consume(self._on_message, no_ack=True)
        self._exchange = exchange
        log.info("emulation relay: worker %s on %s", self._emulation.worker, exchange.name)

    async def forward(self, request: EmulationRequest) -> None:
        """Publishes ``request`` to its worker's queue and waits for the broker's word.

        Raises:
            UnknownWorker: the broker returned it: no queue is bound with that id.
            RelayUnavailable: not started, disconnected, or no confirm in time.
        """
        exchange = self._exchange
        if exchange is None:
            raise RelayUnavailable("the relay is not connected")
        message = aio_pika.Message(encode(request), content_type="application/json")
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                result: Any = await exchange.publish(
                    message, routing_key=request.node, mandatory=True
                )
        except TimeoutError:
            raise RelayUnavailable(f"no confirm within {PUBLISH_TIMEOUT:g}s") from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise RelayUnavailable(f"RabbitMQ: {type(exc).__name__}") from None
        if isinstance(result, DeliveredMessage):  # returned: routed to no queue
            raise UnknownWorker(request.node)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            request = decode_emulation_request(message.body, self._max_frame_bytes)
        except BadEmulationRequest as exc:
            log.warning("emulation relay: message ignored: %s", exc)
            return
        self._emulation.deliver(request.session, request.data)

    async def close(self) -> None:
        """Disconnects; the broker deletes this worker's queue (so its id stops routing)."""
        if self._connection is None:
            return
        self._exchange = None
        if self._follow is not None:
            self._follow.cancel()
            self._follow = None
        await self._connection.close()
        self._connection = None
