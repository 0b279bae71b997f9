"""The broker addresses of a RabbitMQ cluster, and moving to another when one goes away.

A cluster is given as several addresses (``amqp.urls``, ``amqp.stream_urls``). Both
client libraries hold one: aio-pika's robust connection reconnects to the URL it was made
with, rstream's consumer to one host and port. :class:`AddressRing` keeps the list and
which one is current; :func:`follow_ring` moves a robust connection along it, and the
stream protocol reader (:mod:`tidings.log.stream_protocol`) takes the ring's current
address for each new consumer and moves on when one fails.

How a robust connection is moved uses aio-pika's public surface only: its ``url``
attribute, which every reconnection attempt reads afresh; its close callbacks, called
before it reconnects; and its ``connected`` event. When a connection is lost the next
attempt goes to the next address (the node that dropped it is likely the one going away);
while it stays down, an address that takes no TCP connection is left for the next one,
once per reconnect interval, so every node is tried in turn. Any node of the cluster
serves: the stream's offsets are the same on every replica, and a reconnected log
re-attaches after the last offset it read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

from aio_pika import RobustConnection
from yarl import URL

from tidings.config import AmqpSettings

__all__ = ["AddressRing", "StreamAddress", "follow_ring", "stream_addresses"]

T = TypeVar("T")


class AddressRing(Generic[T]):
    """Addresses tried in turn, starting with the first.

    Raises:
        ValueError: ``addresses`` is empty.
    """

    def __init__(self, addresses: Sequence[T]) -> None:
        if not addresses:
            raise ValueError("an address ring needs at least one address")
        self._addresses = tuple(addresses)
        self._index = 0

    def __len__(self) -> int:
        return len(self._addresses)

    @property
    def current(self) -> T:
        """The address to use now."""
        return self._addresses[self._index]

    def advance(self) -> T:
        """Moves to the next address (after the last, the first again); returns it."""
        self._index = (self._index + 1) % len(self._addresses)
        return self.current


async def follow_ring(
    connection: RobustConnection, ring: AddressRing[str], interval: float
) -> None:
    """Moves ``connection`` to the next address of ``ring`` whenever it is lost, and once
    every ``interval`` seconds while it cannot reconnect; runs until cancelled.

    ``ring.current`` must be the address ``connection`` was opened with.
    """
    if len(ring) < 2:
        return
    down = asyncio.Event()

    def lost(*_args: Any) -> None:
        connection.url = URL(ring.advance())
        down.set()

    connection.close_callbacks.add(lost)
    try:
        while not connection.is_closed:
            await down.wait()
            down.clear()
            while not connection.connected.is_set() and not connection.is_closed:
                await asyncio.sleep(interval)
                # Moves on only from an address that takes no connection at all: one that
                # does is being (re)connected to, and moving then would leave ``url``
                # naming another node than the one connected.
                if not connection.connected.is_set() and not await _accepts(
                    connection.url, interval
                ):
                    connection.url = URL(ring.advance())
    finally:
        connection.close_callbacks.discard(lost)


async def _accepts(url: URL, within: float) -> bool:
    """Whether ``url``'s host takes a TCP connection on its port within ``within`` s."""
    port = url.port or (5671 if url.scheme == "amqps" else 5672)
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(url.host or "localhost", port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


@dataclass(frozen=True, slots=True)
class StreamAddress:
    """Where and as whom the stream protocol connects."""

    host: str
    port: int
    user: str
    password: str
    vhost: str
    tls: bool

    @classmethod
    def of(cls, settings: AmqpSettings) -> StreamAddress:
        """The first of :func:`stream_addresses` (``settings.url`` must be set)."""
        return stream_addresses(settings)[0]

    @classmethod
    def parse(cls, url: str, default_port: int) -> StreamAddress:
        """The address of an ``amqp(s)://`` URL on ``default_port``, or of a
        ``rabbitmq-stream(+tls)://`` URL on its own port (``default_port`` if it has none)."""
        parsed = URL(url)
        # An empty path means the default virtual host; "/name" names one, percent-encoded.
        vhost = unquote(parsed.raw_path[1:]) if len(parsed.raw_path) > 1 else "/"
        own_port = parsed.scheme.startswith("rabbitmq-stream") and parsed.explicit_port
        return cls(
            host=parsed.host or "localhost",
            port=parsed.port if own_port and parsed.port else default_port,
            user=parsed.user or "guest",
            password=parsed.password or "guest",
            vhost=vhost,
            tls=parsed.scheme in ("amqps", "rabbitmq-stream+tls"),
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port} (virtual host {self.vhost!r})"


def stream_addresses(settings: AmqpSettings) -> list[StreamAddress]:
    """The stream protocol's addresses: ``amqp.stream_urls``, or else every AMQP address's
    host on ``amqp.stream_port``."""
    urls = settings.stream_urls or settings.addresses
    return [StreamAddress.parse(url, settings.stream_port) for url in urls]
