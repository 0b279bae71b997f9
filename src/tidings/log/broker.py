"""The broker connection: aio-pika's robust connection, and what its failures mean.

:func:`connect` tells refused logins, unknown virtual hosts and unreachable brokers apart
(only the last is worth retrying) and says each in one line naming the setting to change;
:func:`describe` gives the short text of any error of aiormq, aio-pika or the socket
layer. Once connected, aio-pika reconnects by itself; what the log does then is
:mod:`tidings.log.supervisor`'s.
"""

from __future__ import annotations

import asyncio
import logging
import random

import aio_pika
import aiormq
from aio_pika import RobustConnection
from yarl import URL

from tidings.config import AmqpSettings
from tidings.errors import TidingsError
from tidings.log.addresses import AddressRing, follow_ring

__all__ = ["SourceError", "StreamLost", "connect", "connect_beside", "describe"]


class SourceError(TidingsError):
    """RabbitMQ cannot serve as the log: unreachable, refused, or set up otherwise than
    the settings say. The message is one line and names what to change."""


class StreamLost(Exception):
    """The channel or the stream went away; the caller tries again later."""


async def connect(
    settings: AmqpSettings,
    ring: AddressRing[str],
    *,
    connect_timeout: float,
    reconnect_interval: float,
    name: str,
    logger: logging.Logger,
) -> RobustConnection:
    """Opens the robust connection to the first address of ``ring`` that answers (leaving
    ``ring.current`` on it); with ``retry_on_start``, retries while none does.

    Raises:
        SourceError: refused login or virtual host, or no broker reachable (at once,
            unless ``retry_on_start``; a refusal is never retried: waiting does not fix a
            password, and every node of a cluster shares its users).
    """
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        failures: list[str] = []
        for _ in range(len(ring)):
            url = ring.current
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
                if not retryable:
                    raise SourceError(message) from None
                failures.append(message)
                ring.advance()
        message = "; ".join(failures)
        if not settings.retry_on_start:
            raise SourceError(message)
        logger.warning("%s (attempt %d, retrying in %.1fs)", message, attempt, delay)
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 30.0)


async def connect_beside(
    settings: AmqpSettings, name: str, logger: logging.Logger
) -> tuple[RobustConnection, asyncio.Task[None] | None]:
    """A robust connection of its own for a part beside the log (the control plane, the
    events outbox), like :func:`connect` on ``amqp``'s addresses, and the task that moves
    it to the next address when its broker node goes away, as the log's link does (None
    with one address). The caller cancels that task when it closes the connection.

    Raises:
        SourceError: as :func:`connect`.
    """
    ring = AddressRing(settings.addresses)
    interval = settings.reconnect_interval
    connection = await connect(
        settings, ring, connect_timeout=5.0, reconnect_interval=interval, name=name, logger=logger
    )
    if len(ring) < 2:
        return connection, None
    follower = asyncio.get_running_loop().create_task(follow_ring(connection, ring, interval))
    return connection, follower


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
