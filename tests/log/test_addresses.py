"""Several broker addresses: the ring, the stream protocol's addresses, and a robust
connection moved to another address when its own goes away (real RabbitMQ, through two
proxies that stand for two nodes)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aio_pika
import pytest

from tests.system.harness import CutProxy, scaled
from tidings.config import AmqpSettings
from tidings.log.addresses import AddressRing, StreamAddress, follow_ring, stream_addresses


class TestRing:
    def test_goes_round(self) -> None:
        ring = AddressRing(["a", "b", "c"])
        assert ring.current == "a"
        assert [ring.advance() for _ in range(4)] == ["b", "c", "a", "b"]
        assert len(ring) == 3

    def test_one_address_stays(self) -> None:
        ring = AddressRing(["a"])
        assert ring.advance() == "a" == ring.current

    def test_needs_an_address(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            AddressRing([])


class TestStreamAddresses:
    def test_from_the_amqp_urls_on_the_stream_port(self) -> None:
        settings = AmqpSettings(
            url="amqps://u:p%40ss@rmq-1:5671/%2Fapp", urls=["amqp://v:q@rmq-2/"], stream_port=5551
        )
        assert stream_addresses(settings) == [
            StreamAddress("rmq-1", 5551, "u", "p@ss", "/app", True),
            StreamAddress("rmq-2", 5551, "v", "q", "/", False),
        ]

    def test_stream_urls_carry_their_own_ports(self) -> None:
        settings = AmqpSettings(
            url="amqp://a/",
            stream_urls=[
                "rabbitmq-stream://g:h@127.0.0.1:5553/",
                "rabbitmq-stream+tls://g:h@127.0.0.1/v",
            ],
        )
        assert stream_addresses(settings) == [
            StreamAddress("127.0.0.1", 5553, "g", "h", "/", False),
            StreamAddress("127.0.0.1", 5552, "g", "h", "v", True),
        ]

    def test_defaults(self) -> None:
        assert StreamAddress.of(AmqpSettings(url="amqp://host")) == StreamAddress(
            "host", 5552, "guest", "guest", "/", False
        )


class FakeConnection:
    """What follow_ring touches of a robust connection."""

    def __init__(self) -> None:
        from aio_pika.tools import CallbackCollection
        from yarl import URL

        self.url = URL("amqp://a/")
        self.close_callbacks = CallbackCollection(self)
        self.connected = asyncio.Event()
        self.connected.set()
        self.is_closed = False

    def lose(self) -> None:
        self.connected.clear()
        self.close_callbacks(None)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_lost_connection_moves_on_and_dead_addresses_are_passed() -> None:
    conn = FakeConnection()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    live = f"amqp://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    dead = f"amqp://127.0.0.1:{_closed_port()}/"
    ring = AddressRing(["amqp://a/", dead, live])
    task = asyncio.create_task(follow_ring(conn, ring, 0.05))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    try:
        conn.lose()
        assert str(conn.url) == dead  # at once: the next attempt goes elsewhere
        await asyncio.sleep(0.12)
        assert str(conn.url) == live  # nothing listens there: the next one
        await asyncio.sleep(0.15)
        assert str(conn.url) == live  # it takes connections: aio-pika's attempt goes on
        conn.connected.set()
    finally:
        await _stop(task)
        server.close()
    assert not conn.close_callbacks  # nothing left behind


async def test_one_address_needs_no_watching() -> None:
    conn = FakeConnection()
    await asyncio.wait_for(follow_ring(conn, AddressRing(["amqp://a/"]), 1.0), 1)  # type: ignore[arg-type]
    assert not conn.close_callbacks


@pytest.mark.rabbitmq
@pytest.mark.integration
async def test_a_robust_connection_reconnects_through_another_address() -> None:
    # Two proxies to the one broker stand for two nodes; the first stops for good.
    first, second = CutProxy(), CutProxy()
    await first.start()
    await second.start()
    ring = AddressRing([first.url, second.url])
    connection = await aio_pika.connect_robust(ring.current, reconnect_interval=0.1)
    task = asyncio.create_task(follow_ring(connection, ring, 0.1))
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await first.stop()
        await second.linked(timeout=scaled(10))
        await asyncio.wait_for(connection.connected.wait(), scaled(10))
        await asyncio.wait_for(channel.ready(), scaled(10))
        # The robust channel and its exclusive queue were restored on the new link.
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue.name)
        message = await queue.get(timeout=scaled(5))
        assert message.body == b"x"
        assert connection.url.port == second.port
    finally:
        await _stop(task)
        await connection.close()
        await second.stop()
