"""Reading the stream over RabbitMQ's stream protocol (the ``rabbitmq_stream`` plugin).

The stream protocol hands over whole chunks of the stream's log, where AMQP 0-9-1 makes the
broker turn every message into a ``basic.deliver`` with its own frames and the client
parse each one: tidings reads about twice as many messages per CPU second this way
(docs/architecture.md, "Two ways to read the stream").
:class:`StreamProtocolReader` is only the data path of :class:`~tidings.log.rabbitmq.RabbitMqLog`:
it reads from a numeric offset and reports a lost subscription; declaring, control
messages, the epoch and the checks after a reconnect stay on AMQP 0-9-1.

rstream's own recovery is off: after a loss the log re-attaches with the checks a resumed
reader needs (same stream, same epoch), and a fresh rstream consumer.

Where it connects (:func:`~tidings.log.addresses.stream_addresses`): given one address,
only ever that one, never the address a node advertises, for that address is often a load
balancer, a proxy or a mapped port (rstream's load-balancer mode). Given several, they are
the cluster's nodes: the first that answers tells where the stream's replicas are, and
rstream connects to one of them at the address that node advertises
(``stream.advertised_host`` and ``stream.advertised_port`` on the broker); when a
connection fails or is lost, the next consumer starts at the next address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import rstream
from rstream.utils import OnClosedErrorInfo

from tidings.config import AmqpSettings
from tidings.log.addresses import AddressRing, StreamAddress, stream_addresses
from tidings.log.amqp10 import Unsupported, read_message
from tidings.log.message import StreamMessage, normalise_headers

__all__ = [
    "StreamAddress",
    "StreamProtocolReader",
    "message_from_bytes",
    "message_of",
    "new_consumer",
]

# Chunks the broker may send ahead (rstream returns one credit per chunk received). At
# 15,000 events/s on the shared 2-core machine, p99 publish -> read was 66-111 ms with
# rstream's default of 10 and 33-73 ms with 50; what is in flight stays bounded by 50
# chunks.
_INITIAL_CREDIT = 50


def message_of(message: rstream.AMQPMessage, offset: int) -> StreamMessage:
    """The stream message of an AMQP 1.0 message read at ``offset``.

    RabbitMQ stores what AMQP 0-9-1 publishers send as AMQP 1.0: headers become
    application properties, the exchange and routing key message annotations, the
    timestamp ``creation_time`` in milliseconds.
    """
    properties = message.properties
    annotations = message.message_annotations or {}
    body: Any = message.body
    if isinstance(body, list):  # several data sections
        body = b"".join(body)
    created = properties.creation_time if properties is not None else None
    message_id = properties.message_id if properties is not None else None
    return StreamMessage(
        offset,
        _text(annotations.get(b"x-exchange", b"")),
        _text(annotations.get(b"x-routing-key", b"")),
        body if isinstance(body, bytes) else bytes(body or b""),
        normalise_headers(message.application_properties or {}),
        created / 1000 if created is not None else None,
        _text(message_id) if message_id is not None else None,
    )


def message_from_bytes(data: bytes, offset: int) -> StreamMessage:
    """The stream message of an encoded AMQP 1.0 message read at ``offset``: read by
    :mod:`tidings.log.amqp10` when it can, else decoded by rstream."""
    try:
        exchange, routing_key, headers, message_id, created, body = read_message(data)
    except Unsupported:
        return message_of(rstream.amqp_decoder(data), offset)
    return StreamMessage(
        offset,
        exchange,
        routing_key,
        body,
        headers,  # normalised as read
        created / 1000 if created is not None else None,
        _text(message_id) if message_id is not None else None,
    )


def new_consumer(
    address: StreamAddress,
    name: str,
    load_balancer_mode: bool,
    on_close: Callable[[OnClosedErrorInfo], None] | None = None,
) -> rstream.Consumer:
    """An rstream consumer for ``address`` (not connected yet), with rstream's own
    recovery off.

    Args:
        address: where to connect.
        name: the connection's name, shown by ``rabbitmqctl list_stream_connections``.
        load_balancer_mode: connect only ever to ``address``, never to the address the
            broker advertises (see the module's docstring).
        on_close: called when the broker ends the connection or moves the stream.
    """
    return rstream.Consumer(
        address.host,
        address.port,
        username=address.user,
        password=address.password,
        vhost=address.vhost,
        ssl_context=ssl.create_default_context() if address.tls else None,
        connection_name=name,
        load_balancer_mode=load_balancer_mode,
        on_close_handler=on_close,
        recovery_strategy=rstream.recovery.BackOffRecoveryStrategy(False),
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class StreamProtocolReader:
    """One subscription to the stream at a time, over the stream protocol.

    Args:
        settings: the ``[amqp]`` settings (``url``, ``stream``, ``stream_port``).
        on_message: called with every message read, in offset order, synchronously.
        on_lost: called once when a subscription is lost, with a reason and whether the
            stream itself changed (deleted, or its leader moved), not just the connection.
        timeout: seconds to wait for the broker when connecting or subscribing.
        name: the connection's name, shown by ``rabbitmqctl list_stream_connections``.
        logger: where to log.
    """

    def __init__(
        self,
        settings: AmqpSettings,
        *,
        on_message: Callable[[StreamMessage], None],
        on_lost: Callable[[str, bool], None],
        timeout: float,
        name: str,
        logger: logging.Logger,
    ) -> None:
        self._ring = AddressRing(stream_addresses(settings))
        self._stream = settings.stream
        self._on_message = on_message
        self._on_lost = on_lost
        self._timeout = timeout
        self._name = name
        self._log = logger
        self._consumer: rstream.Consumer | None = None
        # Bumped for every subscription: a late callback of an old one is ignored.
        self._generation = 0
        # Whether the broker dropped the current subscription (its connection is lost).
        self._dropped = False
        # Closes of dropped consumers, left to finish in the background.
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> StreamAddress:
        """Where the next consumer connects first."""
        return self._ring.current

    def _new_consumer(self) -> rstream.Consumer:
        generation = self._generation
        address = self._ring.current

        def closed(info: OnClosedErrorInfo) -> None:
            if generation == self._generation and self._stream in (info.streams or []):
                self._generation += 1
                self._dropped = True
                changed = info.reason == "Metadata Update"
                if not changed and self._ring.current is address:
                    self._ring.advance()  # the link broke, maybe with its node: try another
                self._on_lost(f"stream protocol: {info.reason}", changed)

        # One address: only ever that one (see the module's docstring).
        return new_consumer(address, self._name, len(self._ring) == 1, closed)

    @contextlib.asynccontextmanager
    async def _moving_on(self) -> AsyncIterator[None]:
        """Moves to the next address when what it wraps fails."""
        address = self._ring.current
        try:
            yield
        except BaseException:
            if self._ring.current is address:
                self._ring.advance()
            raise

    async def probe(self) -> None:
        """Connects and disconnects: raises if the stream protocol is not reachable at any
        address.

        Raises:
            OSError, TimeoutError, rstream.ServerError: as the last connection failed.
        """
        await self._at_some_address(self._probe_once)

    async def _probe_once(self) -> None:
        consumer = self._new_consumer()
        try:
            async with self._moving_on(), asyncio.timeout(self._timeout):
                await consumer.start()
        finally:
            await self._close(consumer)

    async def _at_some_address(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Runs ``attempt`` (which moves on when it fails) at each address in turn until
        one succeeds: in a cluster, any node serves the stream.

        Raises:
            what the attempt at the last address raised.
        """
        for tried in range(1, len(self._ring) + 1):
            try:
                await attempt()
                return
            except Exception:
                if tried == len(self._ring):
                    raise

    async def subscribe(self, offset: int) -> None:
        """Reads the stream from ``offset`` on; any previous subscription ends first.

        Raises:
            OSError, TimeoutError, rstream.ServerError, rstream.StreamDoesNotExist: the
                subscription could not be made (the caller retries).
        """
        await self._subscribe(rstream.OffsetType.OFFSET, offset)

    async def subscribe_since(self, seconds: float) -> None:
        """Reads the stream from the chunk written ``seconds`` before its last one on.

        The broker's clock decides, as with AMQP 0-9-1's ``x-stream-offset = "<N>s"``: the
        time is counted back from the timestamp the broker gave the stream's last chunk, so
        call this right after writing to the stream (a node with a wrong clock still reads
        the right window).

        Raises:
            as :meth:`subscribe`; TimeoutError too if the stream holds nothing.
        """
        await self.cancel()
        latest = await self._last_chunk_time()
        await self._subscribe(rstream.OffsetType.TIMESTAMP, latest - math.ceil(seconds * 1000))

    async def _last_chunk_time(self) -> int:
        """The broker's timestamp (ms) on the stream's last chunk."""
        found: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def received(_message: bytes, context: rstream.MessageContext) -> None:
            if not found.done():
                found.set_result(context.timestamp)

        consumer = self._new_consumer()
        self._generation += 1  # the probe's own close is not a lost subscription
        try:
            async with self._moving_on(), asyncio.timeout(self._timeout):
                await consumer.subscribe(
                    self._stream,
                    received,
                    offset_specification=rstream.ConsumerOffsetSpecification(
                        rstream.OffsetType.LAST
                    ),
                    initial_credit=1,
                )
                return await found
        finally:
            found.cancel()
            await self._close(consumer)

    async def _subscribe(self, kind: rstream.OffsetType, value: int) -> None:
        await self._at_some_address(lambda: self._subscribe_once(kind, value))

    async def _subscribe_once(self, kind: rstream.OffsetType, value: int) -> None:
        await self.cancel()
        generation = self._generation
        consumer = self._consumer = self._new_consumer()
        deliver = self._on_message

        def received(data: bytes, context: rstream.MessageContext) -> None:
            if generation != self._generation:
                return
            try:
                message = message_from_bytes(data, context.offset)
            except Exception:
                # Never dropped: as a record without headers it is counted and quarantined
                # as unroutable by the node.
                self._log.exception(
                    "stream %r: cannot decode the message at offset %d; passed on as is",
                    self._stream,
                    context.offset,
                )
                message = StreamMessage(context.offset, "", "", data)
            deliver(message)

        async with self._moving_on(), asyncio.timeout(self._timeout):
            await consumer.subscribe(
                self._stream,
                received,
                offset_specification=rstream.ConsumerOffsetSpecification(kind, value),
                initial_credit=_INITIAL_CREDIT,
            )

    async def cancel(self) -> None:
        """Ends the current subscription, if any, and closes its connection."""
        self._generation += 1
        consumer, self._consumer = self._consumer, None
        dropped, self._dropped = self._dropped, False
        if consumer is None:
            return
        if dropped:
            # The broker ended the subscription already (its node left, or the stream
            # moved): rstream's close would wait 5 s for an answer to its unsubscribe that
            # never comes, and the next subscription would wait with it.
            task = asyncio.get_running_loop().create_task(self._close(consumer))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            return
        await self._close(consumer)

    async def _close(self, consumer: rstream.Consumer) -> None:
        """Closes ``consumer``; a broker that is gone or slow does not hold the caller."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await consumer.close()
