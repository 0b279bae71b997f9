"""The AMQP plumbing under the RabbitMQ log: connecting, the topology, short stream reads.

Three jobs, each with the one-line errors an operator needs:

- :func:`connect`: aio-pika's robust connection, with refused logins, unknown virtual
  hosts and unreachable brokers told apart (only the last is worth retrying);
- :func:`declare_topology`: checks the application's exchange and the stream queue on
  throw-away channels before declaring anything on the robust channels (a failed declare
  closes its channel, and a robust channel would reopen it in a loop), then declares and
  binds so that aio-pika restores it all after a reconnect;
- :class:`StreamReader`: reads a stream from an offset until a condition holds, takes
  a broker-side lock, on plain aiormq channels that nothing restores;

while :mod:`tidings.log.message` turns what is read into records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import (
    AbstractExchange,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import (
    AMQPError,
    ChannelAccessRefused,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from yarl import URL

from tidings.config import AmqpSettings
from tidings.errors import TidingsError
from tidings.log.message import StreamMessage, from_delivery
from tidings.topic import topic_matches

__all__ = [
    "SourceError",
    "StreamLost",
    "StreamReader",
    "Topology",
    "connect",
    "declare_topology",
    "describe",
    "publish_to_stream",
    "reaches_stream",
]

# The exchanges every virtual host has: they cannot be declared, only checked.
_BUILTIN_EXCHANGES = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}
_T = TypeVar("_T")


class SourceError(TidingsError):
    """RabbitMQ cannot serve as the log: unreachable, refused, or set up otherwise than
    the settings say. The message is one line and names what to change."""


# -- connecting ---------------------------------------------------------------------------


async def connect(
    settings: AmqpSettings,
    *,
    connect_timeout: float,
    reconnect_interval: float,
    name: str,
    logger: logging.Logger,
) -> AbstractRobustConnection:
    """Opens the robust connection; with ``retry_on_start``, retries an unreachable broker.

    Raises:
        SourceError: refused login or virtual host, or an unreachable broker (at once,
            unless ``retry_on_start``; a refusal is never retried: waiting does not fix a
            password).
    """
    url = settings.url
    if not url:
        raise SourceError("amqp.url is not set: the RabbitMQ log needs a broker")
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            return await aio_pika.connect_robust(
                url,
                timeout=connect_timeout,
                reconnect_interval=reconnect_interval,
                client_properties={"connection_name": name},
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message, retryable = _connect_failure(url, exc, connect_timeout)
            if not (retryable and settings.retry_on_start):
                raise SourceError(message) from None
            logger.warning("%s (attempt %d, retrying in %.1fs)", message, attempt, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 30.0)


def _connect_failure(url: str, exc: BaseException, timeout: float) -> tuple[str, bool]:
    """The one-line message for a failed connection, and whether waiting may help."""
    parsed = URL(url)
    where = str(parsed.with_password("***")) if parsed.password else str(parsed)
    if isinstance(
        exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError
    ):
        return (
            f"RabbitMQ at {where} refused the login of user {parsed.user or 'guest'!r} "
            "(ACCESS_REFUSED): check the credentials (user name and password) in amqp.url",
            False,
        )
    if isinstance(exc, aiormq.exceptions.ConnectionClosed | aiormq.exceptions.ProtocolSyntaxError):
        return (
            f"RabbitMQ at {where} refused the connection ({describe(exc)}): check the "
            "virtual host in amqp.url and the user's permissions on it",
            False,
        )
    reason = f"no answer within {timeout:g}s" if isinstance(exc, TimeoutError) else describe(exc)
    return (
        f"cannot reach RabbitMQ at {where} ({reason}): check amqp.url and that the broker "
        "is running",
        True,
    )


def describe(exc: BaseException) -> str:
    """A short text for an exception from aiormq, aio-pika or the socket layer."""
    if isinstance(exc, aiormq.exceptions.AMQPConnectionError) and len(exc.args) == 2:
        errno, text = exc.args  # aiormq wraps socket errors as (errno, text)
        if isinstance(errno, int):
            return str(text)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# -- topology -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topology:
    """What the log works with once declared.

    Attributes:
        consume: robust channel (QoS = ``amqp.prefetch``) that declared the exchange, the
            stream and its bindings, so a reconnect restores them.
        publish: robust channel with publisher confirms; returned messages raise.
        queue: the stream queue.
        exchange: the application's exchange, for publishing.
        quarantine: the quarantine exchange, or None when not configured.
    """

    consume: AbstractRobustChannel
    publish: AbstractRobustChannel
    queue: AbstractRobustQueue
    exchange: AbstractExchange
    quarantine: AbstractExchange | None


async def declare_topology(
    connection: AbstractRobustConnection,
    settings: AmqpSettings,
    *,
    op_timeout: float,
    logger: logging.Logger,
) -> Topology:
    """Checks, then declares and binds everything the log needs.

    Raises:
        SourceError: an exchange or queue exists with other settings, a missing exchange
            may not be declared, or the broker refused an operation.
    """
    s, timeout = settings, op_timeout
    probe = _Probe(connection, timeout)
    try:
        consume = await connection.channel(publisher_confirms=False)
        # Stream consumers need a prefetch; the robust channel sets it again on reopen.
        await consume.set_qos(prefetch_count=s.prefetch)
        publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
        if await _check_exchange(probe, s, logger):
            await consume.declare_exchange(
                s.exchange, type=s.exchange_type, durable=s.exchange_durable, timeout=timeout
            )
        arguments = stream_arguments(s)
        await _check_stream(probe, s, arguments)
        queue = await consume.declare_queue(
            s.stream, durable=True, arguments=arguments, timeout=timeout
        )
        for pattern in s.bindings:
            await queue.bind(s.exchange, routing_key=pattern, timeout=timeout)
        exchange = await publish.get_exchange(s.exchange, ensure=False)
        quarantine = None
        if s.quarantine_exchange:
            name = s.quarantine_exchange
            if await probe.exists(lambda ch: ch.exchange_declare(name, passive=True)):
                quarantine = await publish.get_exchange(name, ensure=False)
            else:
                quarantine = await publish.declare_exchange(
                    name, type=aio_pika.ExchangeType.FANOUT, durable=True, timeout=timeout
                )
    except SourceError:
        raise
    except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
        raise SourceError(
            f"cannot set up exchange {s.exchange!r} and stream {s.stream!r}: {describe(exc)}"
        ) from exc
    return Topology(consume, publish, queue, exchange, quarantine)


def stream_arguments(settings: AmqpSettings) -> dict[str, Any]:
    """The stream queue's arguments: the type and the retention."""
    return {
        "x-queue-type": "stream",
        "x-max-age": f"{max(1, math.ceil(settings.stream_max_age))}s",
        "x-max-length-bytes": settings.stream_max_bytes,
    }


def reaches_stream(settings: AmqpSettings, routing_key: str) -> bool:
    """Whether the stream's bindings take ``routing_key`` (known for topic and direct)."""
    if settings.exchange_type == "topic":
        return any(topic_matches(p, routing_key) for p in settings.bindings)
    if settings.exchange_type == "direct":
        return routing_key in settings.bindings
    return True


async def _check_exchange(probe: _Probe, s: AmqpSettings, logger: logging.Logger) -> bool:
    """Refuses an exchange set up otherwise; returns whether tidings declares it."""
    wanted = f"amqp.exchange_type = {s.exchange_type!r}, amqp.exchange_durable = " + (
        "true" if s.exchange_durable else "false"
    )
    if not await probe.exists(lambda ch: ch.exchange_declare(s.exchange, passive=True)):
        if not s.declare_exchange:
            raise SourceError(
                f"exchange {s.exchange!r} does not exist on the broker: declare it "
                f"({wanted}) or set amqp.declare_exchange = true"
            )
        return not s.exchange.startswith("amq.")
    builtin = _BUILTIN_EXCHANGES.get(s.exchange)
    if builtin is not None:
        if builtin != s.exchange_type:
            raise SourceError(
                f"exchange {s.exchange!r} is RabbitMQ's built-in {builtin} exchange, but "
                f"amqp.exchange_type = {s.exchange_type!r}: set it to {builtin!r}"
            )
        return False
    try:
        # Declaring an existing exchange with its own settings changes nothing; with
        # other settings the broker answers PRECONDITION_FAILED and says which.
        await probe.run(
            lambda ch: ch.exchange_declare(
                s.exchange, exchange_type=s.exchange_type, durable=s.exchange_durable
            )
        )
    except ChannelPreconditionFailed as exc:
        raise SourceError(
            f"exchange {s.exchange!r} exists with other settings than {wanted} "
            f"({describe(exc)}): set those to match the existing exchange, or point "
            "amqp.exchange at another one; tidings never redeclares an exchange"
        ) from None
    except ChannelAccessRefused as exc:
        logger.warning(
            "cannot check the type of exchange %r (%s); using it as it is",
            s.exchange,
            describe(exc),
        )
        return False
    return s.declare_exchange


async def _check_stream(probe: _Probe, s: AmqpSettings, arguments: dict[str, Any]) -> None:
    try:
        await probe.run(lambda ch: ch.queue_declare(s.stream, durable=True, arguments=arguments))
    except ChannelPreconditionFailed as exc:
        raise SourceError(
            f"queue {s.stream!r} exists with other settings ({describe(exc)}): tidings "
            f"needs a stream queue with x-max-age {arguments['x-max-age']} "
            f"(amqp.stream_max_age) and x-max-length-bytes {s.stream_max_bytes} "
            "(amqp.stream_max_bytes); set those to the existing values, point "
            "amqp.stream at another name, or delete the queue (its history is lost)"
        ) from None
    except ChannelAccessRefused as exc:
        raise SourceError(
            f"the user in amqp.url may not declare queue {s.stream!r} ({describe(exc)}): "
            "grant it configure, write and read permissions on that name"
        ) from None


class _Probe:
    """Runs one operation on a throw-away channel: an error closes only that channel."""

    def __init__(self, connection: AbstractRobustConnection, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout

    async def channel(self) -> aiormq.abc.AbstractChannel:
        async with asyncio.timeout(self._timeout):
            await self._connection.ready()
            transport = self._connection.transport
            if transport is None:
                raise ConnectionError("not connected to RabbitMQ")
            return await transport.connection.channel(publisher_confirms=False)

    async def run(self, op: Callable[[aiormq.abc.AbstractChannel], Awaitable[_T]]) -> _T:
        channel = await self.channel()
        try:
            async with asyncio.timeout(self._timeout):
                return await op(channel)
        finally:
            await close_quietly(channel)

    async def exists(self, op: Callable[[aiormq.abc.AbstractChannel], Awaitable[Any]]) -> bool:
        try:
            await self.run(op)
        except ChannelNotFoundEntity:
            return False
        return True


async def close_quietly(channel: aiormq.abc.AbstractChannel) -> None:
    """Closes a channel that may be closed or broken already."""
    if not channel.is_closed:
        with contextlib.suppress(Exception):
            await channel.close()


# -- stream reads, control messages, the lock -----------------------------------------


class StreamLost(Exception):
    """The channel or the stream went away; the caller tries again later."""


class StreamReader:
    """Short reads of the stream and a broker-side lock, on channels nothing restores.

    Args:
        connection: the log's robust connection.
        stream: the stream queue's name.
        prefetch: messages in flight per read.
        timeout: seconds to wait for any broker reply.
    """

    def __init__(
        self, connection: AbstractRobustConnection, stream: str, prefetch: int, timeout: float
    ) -> None:
        self._probe = _Probe(connection, timeout)
        self._stream = stream
        self._prefetch = prefetch
        self._timeout = timeout

    async def read(self, offset: int | str, step: Callable[[int, StreamMessage], _T | None]) -> _T:
        """Reads from ``offset`` until ``step(offset, message)`` answers; returns its answer.

        Raises:
            StreamLost: the channel closed before ``step`` answered.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_T] = loop.create_future()
        channel = await self._probe.channel()
        batch = max(1, self._prefetch // 2)
        unacked = 0

        async def on_message(message: DeliveredMessage) -> None:
            nonlocal unacked
            if done.done():
                return
            read = from_delivery(message)
            if read is not None:
                answer = step(read.offset, read)
                if answer is not None:
                    done.set_result(answer)
                    return
            unacked += 1
            if unacked >= batch:  # acknowledgements are the stream's flow control
                unacked = 0
                with contextlib.suppress(Exception):
                    await channel.basic_ack(message.delivery_tag or 0, multiple=True)

        try:
            await channel.basic_qos(prefetch_count=self._prefetch, timeout=self._timeout)
            await channel.basic_consume(
                self._stream,
                on_message,
                arguments={"x-stream-offset": offset},
                timeout=self._timeout,
            )
            closing = channel.closing
            await asyncio.wait((done, closing), return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            if not done.done():
                raise StreamLost("the channel closed while reading the stream")
            return done.result()
        finally:
            done.cancel()
            await close_quietly(channel)

    async def tail(self) -> int:
        """The first offset of the stream's last chunk: a lower bound of its tail."""
        return await self.read("last", lambda offset, _message: offset)

    async def acquire(self, name: str) -> aiormq.abc.AbstractChannel:
        """Takes the lock ``name``: an exclusive queue, held by one connection at a time
        and dropped by the broker if that connection dies. Give the channel to
        :meth:`release`.

        Raises:
            TimeoutError: another connection held it for longer than the timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            channel = await self._probe.channel()
            try:
                await channel.queue_declare(
                    name, exclusive=True, auto_delete=True, timeout=self._timeout
                )
                return channel
            except ChannelLockedResource:
                if loop.time() >= deadline:
                    raise TimeoutError(f"another node holds {name!r}") from None
            except BaseException:
                await close_quietly(channel)
                raise
            await asyncio.sleep(random.uniform(0.05, 0.2))

    async def release(self, channel: aiormq.abc.AbstractChannel, name: str) -> None:
        """Drops the lock taken by :meth:`acquire`."""
        with contextlib.suppress(Exception):
            await channel.queue_delete(name, timeout=self._timeout)
        await close_quietly(channel)


async def publish_to_stream(
    channel: AbstractRobustChannel,
    stream: str,
    headers: dict[str, Any],
    timestamp: float,
    op_timeout: float,
) -> None:
    """Publishes an empty message with ``headers`` straight into the stream queue.

    Raises:
        StreamLost: the stream queue does not exist (the broker returned it).
    """
    message = aio_pika.Message(
        b"",
        headers=headers,
        timestamp=datetime.fromtimestamp(timestamp, UTC),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    try:
        async with asyncio.timeout(op_timeout):
            await channel.default_exchange.publish(message, routing_key=stream, mandatory=True)
    except aiormq.exceptions.PublishError:
        raise StreamLost(f"stream {stream!r} does not exist") from None
