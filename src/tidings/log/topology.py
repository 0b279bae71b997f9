"""The topology the RabbitMQ log declares and checks: the exchange, the stream, bindings.

:func:`declare_topology` checks the application's exchange (tidings never redeclares a
different one) and the stream queue on throw-away channels (:class:`~tidings.log.probe.Probe`)
before declaring anything on the robust channels: a failed declare closes its channel, and
a robust channel would reopen it in a loop. It then declares the stream queue
(``x-queue-type: stream``, retention from ``amqp.stream_max_age`` and
``amqp.stream_max_bytes``) and binds it with every ``amqp.bindings`` pattern, on robust
channels, so that aio-pika restores it all after a reconnect. An exchange or queue that
exists with other settings is a :class:`~tidings.log.broker.SourceError` naming the setting
to change; nothing is redeclared to "fix" it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aiormq.exceptions import AMQPError, ChannelAccessRefused, ChannelPreconditionFailed

from tidings.config import AmqpSettings
from tidings.log.broker import SourceError, describe
from tidings.log.probe import Probe
from tidings.topic import topic_matches

__all__ = [
    "Topology",
    "declare_stream_again",
    "declare_topology",
    "reaches_stream",
    "stream_arguments",
]

# The exchanges every virtual host has: they cannot be declared, only checked.
_BUILTIN_EXCHANGES = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}


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
    probe = Probe(connection, timeout)
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


async def declare_stream_again(
    topology: Topology, settings: AmqpSettings, *, op_timeout: float
) -> None:
    """Declares and binds the stream queue again, after it was deleted under the log."""
    await topology.queue.declare(timeout=op_timeout)
    for pattern in settings.bindings:
        await topology.queue.bind(settings.exchange, routing_key=pattern, timeout=op_timeout)


def stream_arguments(settings: AmqpSettings) -> dict[str, Any]:
    """The stream queue's arguments: the type, the retention and, when set, the number of
    nodes holding it (RabbitMQ checks that one too when the stream exists)."""
    arguments: dict[str, Any] = {
        "x-queue-type": "stream",
        "x-max-age": f"{max(1, math.ceil(settings.stream_max_age))}s",
        "x-max-length-bytes": settings.stream_max_bytes,
    }
    if settings.stream_replicas:
        arguments["x-initial-cluster-size"] = settings.stream_replicas
    return arguments


def reaches_stream(settings: AmqpSettings, routing_key: str) -> bool:
    """Whether the stream's bindings take ``routing_key`` (known for topic and direct)."""
    if settings.exchange_type == "topic":
        return any(topic_matches(p, routing_key) for p in settings.bindings)
    if settings.exchange_type == "direct":
        return routing_key in settings.bindings
    return True


async def _check_exchange(probe: Probe, s: AmqpSettings, logger: logging.Logger) -> bool:
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


async def _check_stream(probe: Probe, s: AmqpSettings, arguments: dict[str, Any]) -> None:
    try:
        await probe.run(lambda ch: ch.queue_declare(s.stream, durable=True, arguments=arguments))
    except ChannelPreconditionFailed as exc:
        replicas = (
            f"x-initial-cluster-size {s.stream_replicas}"
            if s.stream_replicas
            else "no x-initial-cluster-size"
        )
        raise SourceError(
            f"queue {s.stream!r} exists with other settings ({describe(exc)}): tidings "
            f"needs a stream queue with x-max-age {arguments['x-max-age']} "
            f"(amqp.stream_max_age), x-max-length-bytes {s.stream_max_bytes} "
            f"(amqp.stream_max_bytes) and {replicas} (amqp.stream_replicas); set those "
            "to the existing values, point amqp.stream at another name, or delete the "
            "queue (its history is lost)"
        ) from None
    except ChannelAccessRefused as exc:
        raise SourceError(
            f"the user in amqp.url may not declare queue {s.stream!r} ({describe(exc)}): "
            "grant it configure, write and read permissions on that name"
        ) from None
