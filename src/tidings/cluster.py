"""The cluster's control plane: presence between workers and nodes, over RabbitMQ alone.

Every worker declares the fanout exchange ``cluster.control_exchange`` (by default
``<amqp.exchange>.control``; not durable, deleted with its last binding) and binds one
exclusive, auto-delete queue of its own to it. On it go the messages of
:mod:`tidings.presence`: a ``join``/``leave`` as each local subscription starts or ends, an
``online``/``offline`` as a user's first connection on the worker opens or its last
closes, a ``snapshot`` of the worker's whole presence set every ``cluster.heartbeat_interval`` (its
heartbeat), a ``hello`` when it starts or reconnects (every other worker answers with a
snapshot straight to its queue, so it need not wait a heartbeat) and a ``bye`` when it
stops. Each worker merges what the others send and, after each heartbeat, expires the
workers it has not heard from for ``cluster.presence_ttl``.

The same queue takes the commands of emulated connections (``transport/emulation.py``)
posted to another worker than the one holding their session: :meth:`RabbitMqControl.forward`
publishes each straight to its worker's queue (default exchange, routing key the queue's
name), *mandatory* and *confirmed* on a channel of its own, so that "no such worker" (it
stopped, or restarted under a new id) comes back from the broker itself and the post is
answered 404. They carry session ids, which are capabilities: they are never logged.

Bounds, with the defaults (heartbeat 5 s, TTL 15 s): a join or leave reaches every other
worker after one broker hop (milliseconds), or with the next heartbeat when it was lost
to a reconnection (5 s); the clients of a worker that died leave everyone's presence
within TTL + one heartbeat (20 s). Messages wait in a queue at most the TTL (a message
TTL on the queue): a worker that fell behind skips to the next snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage

from tidings.clientinfo import ClientInfo
from tidings.config import AmqpSettings, ClusterSettings
from tidings.control_messages import (
    Bye,
    ControlMessage,
    Delta,
    Hello,
    Snapshot,
    UserDelta,
    decode_message,
    encode_message,
)
from tidings.log.broker import connect_beside
from tidings.node import Node
from tidings.protocol.emulation import BadEmulationRequest, EmulationRequest
from tidings.protocol.emulation import decode_emulation_request as decode_emulation
from tidings.protocol.emulation import encode as encode_emulation
from tidings.transport.emulation import Emulation, RelayUnavailable, UnknownWorker

__all__ = [
    "EMULATION_TYPE",
    "FORWARD_TIMEOUT",
    "RabbitMqControl",
    "control_exchange_name",
    "control_queue_name",
]

log = logging.getLogger(__name__)

#: Outgoing messages waiting for the broker beyond which new deltas are dropped (the next
#: snapshot carries them): a broker that stopped reading must not grow memory.
_MAX_BACKLOG = 10_000
#: The AMQP ``type`` of a forwarded emulation command (presence messages have none).
EMULATION_TYPE = "tidings.emulation"
#: Seconds to wait for the broker's confirm of a forwarded emulation command.
FORWARD_TIMEOUT = 5.0


def control_queue_name(worker: str) -> str:
    """The control queue of ``worker`` (a worker id)."""
    return f"tidings.control.{worker}"


def control_exchange_name(amqp: AmqpSettings, cluster: ClusterSettings) -> str:
    """The control exchange: ``cluster.control_exchange``, or ``<amqp.exchange>.control``."""
    return cluster.control_exchange or f"{amqp.exchange}.control"


class RabbitMqControl:
    """One worker's end of the control plane (implements :class:`tidings.node.ControlPlane`).

    Args:
        amqp: the broker settings (the same broker and credentials as the log).
        cluster: exchange name, heartbeat interval and TTL.
        connection_name: shown by RabbitMQ for this connection.
    """

    def __init__(self, amqp: AmqpSettings, cluster: ClusterSettings, connection_name: str) -> None:
        self._amqp = amqp
        self._cluster = cluster
        self._connection_name = connection_name
        #: Unique per process start: a restarted worker is a new member, never the old one.
        self.worker = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._node: Node | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        # (message, routing key of a direct reply or None for the exchange)
        self._outbox: asyncio.Queue[tuple[ControlMessage, str | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._confirmed: AbstractChannel | None = None
        #: Where emulation commands addressed to this worker go (set by the server).
        self.emulation: Emulation | None = None

    @property
    def queue_name(self) -> str:
        """This worker's queue."""
        return control_queue_name(self.worker)

    async def start(self, node: Node) -> None:
        """Declares the exchange and this worker's queue, says hello, starts heartbeats."""
        self._node = node
        name = f"{self._connection_name} control"
        connection, follower = await connect_beside(self._amqp, name, log)
        self._connection = connection
        # No publisher confirms: a lost control message is repaired by the next snapshot,
        # and waiting for each confirm would put a broker round trip behind every join.
        channel = await connection.channel(publisher_confirms=False)
        self._channel = channel
        # Forwarded commands need to know they reached a queue: confirms, on their own.
        self._confirmed = await connection.channel(publisher_confirms=True)
        self._exchange = await channel.declare_exchange(
            control_exchange_name(self._amqp, self._cluster),
            aio_pika.ExchangeType.FANOUT,
            durable=False,
            auto_delete=True,
        )
        queue = await channel.declare_queue(
            self.queue_name,
            exclusive=True,
            auto_delete=True,
            arguments={"x-message-ttl": int(self._cluster.presence_ttl * 1000)},
        )
        self._queue = queue
        await queue.bind(self._exchange)
        await queue.consume(self._on_message, no_ack=True)
        connection.reconnect_callbacks.add(self._on_reconnect)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send_loop()), loop.create_task(self._heartbeats())]
        if follower is not None:
            self._tasks.append(follower)
        self._send(Hello(self.worker))
        log.info("control plane: worker %s on %s", self.worker, self._exchange.name)

    def announce(self, kind: str, channel: str, info: ClientInfo) -> None:
        if self._outbox.qsize() >= _MAX_BACKLOG:
            return
        self._send(Delta(self.worker, self._next_seq(), kind, channel, info))

    def announce_user(self, kind: str, user: str, since: int) -> None:
        if self._outbox.qsize() >= _MAX_BACKLOG:
            return
        self._send(UserDelta(self.worker, self._next_seq(), kind, user, since))

    async def close(self) -> None:
        """Sends ``bye`` (so the others forget this worker at once) and disconnects."""
        if self._connection is None:
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._exchange is not None and not self._connection.is_closed:
            try:
                async with asyncio.timeout(2.0):
                    await self._publish(Bye(self.worker), None)
            except Exception as exc:  # stopping anyway: the TTL covers a lost bye
                log.debug("control plane: bye not sent: %s", exc)
        self._confirmed = None
        await self._connection.close()
        self._connection = None

    # ------------------------------------------------------------------ sending
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _snapshot(self) -> Snapshot:
        assert self._node is not None
        view = self._node.presence_view
        return Snapshot(
            self.worker,
            self._next_seq(),
            view.local_channels(),
            self._node.describe(),
            view.local_users(),
            view.started,
            view.settled(self._node.monotonic()),
        )

    def _send(self, message: ControlMessage, reply_to: str | None = None) -> None:
        self._outbox.put_nowait((message, reply_to))

    async def _send_loop(self) -> None:
        """Publishes the outbox in order (the order the sequence numbers promise)."""
        while True:
            message, reply_to = await self._outbox.get()
            try:
                await self._publish(message, reply_to)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnecting: the next snapshot repairs what is lost
                log.debug("control plane: %s not sent: %s", type(message).__name__, exc)

    async def _publish(self, message: ControlMessage, reply_to: str | None) -> None:
        assert self._channel is not None and self._exchange is not None
        body = aio_pika.Message(
            encode_message(message),
            content_type="application/json",
            expiration=self._cluster.presence_ttl,
            reply_to=self.queue_name,
        )
        if reply_to is None:
            await self._exchange.publish(body, routing_key="")
        else:
            await self._channel.default_exchange.publish(body, routing_key=reply_to)

    async def _heartbeats(self) -> None:
        assert self._node is not None
        while True:
            await asyncio.sleep(self._cluster.heartbeat_interval)
            self._send(self._snapshot())
            self._node.expire_presence()

    def _on_reconnect(self, *args: Any) -> None:
        # Messages were lost meanwhile, both ways: ask everyone for their state again.
        log.info("control plane reconnected; asking the other workers for their state")
        self._send(Hello(self.worker))
        self._send(self._snapshot())

    async def forward(self, request: EmulationRequest) -> None:
        """Hands an emulation command to the worker ``request.node`` names (the
        :class:`~tidings.transport.emulation.Relay` of this worker).

        Raises:
            UnknownWorker: the broker returned it: no worker has that id.
            RelayUnavailable: not connected, or no confirm in time.
        """
        channel = self._confirmed
        if channel is None:
            raise RelayUnavailable("the control plane is not connected")
        message = aio_pika.Message(
            encode_emulation(request),
            content_type="application/json",
            type=EMULATION_TYPE,
            expiration=self._cluster.presence_ttl,
        )
        try:
            async with asyncio.timeout(FORWARD_TIMEOUT):
                result: Any = await channel.default_exchange.publish(
                    message, routing_key=control_queue_name(request.node), mandatory=True
                )
        except TimeoutError:
            raise RelayUnavailable(f"no confirm within {FORWARD_TIMEOUT:g}s") from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise RelayUnavailable(f"RabbitMQ: {type(exc).__name__}") from None
        if isinstance(result, DeliveredMessage):  # returned: routed to no queue
            raise UnknownWorker(request.node)

    # ------------------------------------------------------------------ receiving
    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if message.type == EMULATION_TYPE:
            self._on_emulation(message.body)
            return
        try:
            decoded = decode_message(message.body)
        except ValueError as exc:
            log.warning("control plane: message ignored: %s", exc)
            return
        if decoded.worker == self.worker:
            return  # the fanout hands a worker its own messages too
        if isinstance(decoded, Hello) and message.reply_to:
            self._send(self._snapshot(), message.reply_to)
        assert self._node is not None
        self._node.on_control(decoded)

    def _on_emulation(self, body: bytes) -> None:
        emulation = self.emulation
        if emulation is None:
            return
        assert self._node is not None
        try:
            request = decode_emulation(body, self._node.settings.client.max_frame_bytes)
        except BadEmulationRequest as exc:
            log.warning("control plane: emulation command ignored: %s", exc)
            return
        emulation.deliver(request.session, request.data)
