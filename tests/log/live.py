"""The real RabbitMQ the log tests use (127.0.0.1:5672, guest/guest), and their helpers.

Every test uses its own exchange and stream (uuid suffix, the ``names`` fixture of
``conftest.py``) and deletes them afterwards. Time constants are multiplied by
``TIDINGS_TEST_TIME_SCALE`` (default 1) for slow machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
import orjson

from tidings.config import AmqpSettings
from tidings.log.control import Marker
from tidings.log.rabbitmq import RabbitMqLog
from tidings.record import Record

SCALE = float(os.environ.get("TIDINGS_TEST_TIME_SCALE", "1"))
HOST, PORT = "127.0.0.1", 5672
STREAM_PORT = 5552  # the rabbitmq_stream plugin
URL = f"amqp://guest:guest@{HOST}:{PORT}/"


def broker_up() -> bool:
    """Whether the broker answers on its AMQP port."""
    try:
        socket.create_connection((HOST, PORT), 1).close()
    except OSError:
        return False
    return True


@dataclass
class Names:
    exchange: str
    stream: str
    quarantine: str

    def settings(self, **overrides: Any) -> AmqpSettings:
        values: dict[str, Any] = {
            "url": URL,
            "exchange": self.exchange,
            "stream": self.stream,
            "prefetch": 500,
        }
        values.update(overrides)
        return AmqpSettings(**values)


@dataclass
class Collector:
    """A LogConsumer that keeps what it is given."""

    records: list[Record] = field(default_factory=list)
    epochs: list[str] = field(default_factory=list)
    batches: int = 0

    def on_records(self, records: Sequence[Record]) -> None:
        self.records.extend(records)
        self.batches += 1

    def on_epoch(self, epoch: str) -> None:
        self.epochs.append(epoch)
        self.records.clear()

    def on_reject(self, record: Record, kind: str, reason: str) -> None:
        raise AssertionError("RabbitMqLog does not reject records itself")

    @property
    def bodies(self) -> list[bytes]:
        return [r.body for r in self.records]

    @property
    def positions(self) -> list[int]:
        return [r.position for r in self.records]


def make_log(settings: AmqpSettings, **kwargs: Any) -> RabbitMqLog:
    kwargs.setdefault("reconnect_interval", 0.2 * SCALE)
    kwargs.setdefault("operation_timeout", 5 * SCALE)
    return RabbitMqLog(settings, **kwargs)


async def until(check: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout * SCALE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def publish(exchange: str, items: Sequence[tuple[str, bytes]]) -> None:
    """Publishes like an application would: through its exchange, with confirms."""
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        target = await channel.get_exchange(exchange, ensure=False)
        for key, body in items:
            await target.publish(aio_pika.Message(body), routing_key=key)


async def delete_queue(name: str) -> None:
    """Deletes a queue behind the logs' backs, as an operator would."""
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def read_stream(stream: str) -> list[tuple[int, bytes, dict[str, Any]]]:
    """The stream's whole content (position, body, headers), read independently of
    RabbitMqLog: the oracle."""
    connection = await aiormq.connect(URL)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=1000)
        marker = Marker.new()  # a control message: RabbitMqLog instances skip it
        properties = aiormq.spec.Basic.Properties(headers=marker.headers())
        await channel.basic_publish(b"", routing_key=stream, properties=properties)
        got: list[tuple[int, bytes, dict[str, Any]]] = []
        done = asyncio.get_running_loop().create_future()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            headers = dict(message.header.properties.headers or {})
            if headers.get("x-tidings-marker") == marker.id:
                if not done.done():
                    done.set_result(None)
                return
            # Positions are stream offsets + 1 (0 means "none" to clients).
            got.append((headers.pop("x-stream-offset") + 1, message.body, headers))
            await channel.basic_ack(message.delivery_tag or 0)

        await channel.basic_consume(stream, on_message, arguments={"x-stream-offset": "first"})
        await asyncio.wait_for(done, 10 * SCALE)
        return got
    finally:
        await connection.close()


class Proxy:
    """A TCP relay to the broker whose connections the test can cut."""

    def __init__(self, port: int = 0, upstream: int = PORT) -> None:
        self.port = port
        self.upstream = upstream
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream)
        pair = (writer, up_writer)
        self._pairs.add(pair)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._pairs.discard(pair)

    async def linked(self) -> None:
        """Waits until something is relayed again (the client reconnected)."""
        await until(lambda: bool(self._pairs), what="a relayed connection")

    def cut(self) -> int:
        """Aborts every relayed connection (like a network failure); returns how many."""
        pairs = list(self._pairs)
        for a, b in pairs:
            a.transport.abort()
            b.transport.abort()
        return len(pairs)

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def publish_cutting_links(
    exchange_name: str, proxy: Proxy, log: RabbitMqLog | None = None
) -> None:
    """Publishes events b"0" to b"399", cutting every link through ``proxy`` before
    the 100th and the 250th (once ``log`` is ready again, if given)."""
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        for i in range(400):
            if i in (100, 250):
                if log is not None:
                    await until(lambda: log.ready, what="ready again")
                await proxy.linked()
                assert proxy.cut() >= 1
            await exchange.publish(aio_pika.Message(b"%d" % i), routing_key="k")


class EventTap:
    """The application's side of the events exchange: a queue bound to it with ``#``,
    keeping every event with its routing key and arrival time (monotonic)."""

    def __init__(self, exchange: str, url: str = URL) -> None:
        self.exchange = exchange
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.times: list[float] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self.url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            # What the outbox promises every event: JSON, persistent.
            assert message.content_type == "application/json"
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            self.times.append(time.monotonic())
            self.keys.append(message.routing_key or "")
            self.events.append(orjson.loads(message.body))

        await queue.consume(take, no_ack=True)

    def of(self, kind: str, user: str | None = None) -> list[dict[str, Any]]:
        """The events of type ``kind`` (of ``user`` when given), in arrival order."""
        return [e for e in self.events if e["type"] == kind and (user is None or e["user"] == user)]

    async def until_count(self, count: int, within: float = 20.0) -> None:
        """Waits for ``count`` events of any kind."""
        deadline = time.monotonic() + within * SCALE
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"{len(self.events)} of {count} events came"
            await asyncio.sleep(0.02)

    async def until(self, kind: str, user: str, count: int = 1, within: float = 10.0) -> float:
        """Waits for ``count`` events of ``kind`` for ``user``; returns when the last came."""
        deadline = time.monotonic() + within * SCALE
        while len(self.of(kind, user)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{kind} of {user}: {self.of(kind, user)} after {within}s")
            await asyncio.sleep(0.02)
        return max(
            at
            for at, e in zip(self.times, self.events, strict=True)
            if e["type"] == kind and e["user"] == user
        )

    async def stop(self, delete: bool = False) -> None:
        """Disconnects; with ``delete``, deletes the exchange first."""
        if self._connection is not None:
            if delete:
                channel = await self._connection.channel()
                await channel.exchange_delete(self.exchange)
            await self._connection.close()
