"""RabbitMqLog against a real RabbitMQ (127.0.0.1:5672, guest/guest).

Every test uses its own exchange and stream (uuid suffix) and deletes them afterwards.
Time constants are multiplied by ``TIDINGS_TEST_TIME_SCALE`` (default 1) for slow machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
import pytest

from tests.integration.live import free_port
from tidings.config import AmqpSettings
from tidings.log.epoch import CONTROL_HEADER, Marker
from tidings.log.rabbitmq import RabbitMqLog, SourceError
from tidings.record import Record

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]

SCALE = float(os.environ.get("TIDINGS_TEST_TIME_SCALE", "1"))
HOST, PORT = "127.0.0.1", 5672
STREAM_PORT = 5552  # the rabbitmq_stream plugin
URL = f"amqp://guest:guest@{HOST}:{PORT}/"


def _broker_up() -> bool:
    try:
        socket.create_connection((HOST, PORT), 1).close()
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True, scope="module")
def _need_broker() -> None:
    if not _broker_up():
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ is not reachable on {HOST}:{PORT}")
        pytest.skip(f"RabbitMQ is not reachable on {HOST}:{PORT} (make deps starts it)")


@pytest.fixture
def stream_protocol() -> None:
    """The rabbitmq_stream plugin answers (``make deps`` enables it)."""
    try:
        socket.create_connection((HOST, STREAM_PORT), 1).close()
    except OSError:
        message = f"RabbitMQ's stream protocol is not reachable on {HOST}:{STREAM_PORT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(f"{message} (make deps enables the rabbitmq_stream plugin)")


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


@pytest.fixture
async def names() -> AsyncIterator[Names]:
    suffix = uuid.uuid4().hex[:10]
    n = Names(f"test.{suffix}", f"test.{suffix}.log", f"test.{suffix}.rejects")
    yield n
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        for queue in (n.stream, f"{n.stream}.epoch-lock"):
            await channel.queue_delete(queue)
        for exchange in (n.exchange, n.quarantine):
            await channel.exchange_delete(exchange)


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


# -- round trip and positions -------------------------------------------------------------


async def test_append_comes_back_through_the_stream_in_position_order(names: Names) -> None:
    log, got = make_log(names.settings()), Collector()
    await log.start(got, warm_seconds=60)
    try:
        assert log.ready and log.epoch
        before = time.time()
        for i in range(20):
            await log.append("invoice.created", b'{"n": %d}' % i, {"account_id": "42"})
        await until(lambda: len(got.records) == 20, what="20 records")
        assert got.bodies == [b'{"n": %d}' % i for i in range(20)]
        assert got.positions == sorted(set(got.positions))
        first = got.records[0]
        assert first.routing_key == "invoice.created"
        assert first.headers == {"account_id": "42"}  # the stream's offset header is not kept
        assert before - 1 <= first.timestamp <= time.time() + 1
        assert log.last_position == got.positions[-1]
        assert log.last_record_time == got.records[-1].timestamp
    finally:
        await log.close()
    await log.close()  # idempotent
    assert not log.ready


async def test_append_refuses_a_routing_key_the_bindings_do_not_take(names: Names) -> None:
    log = make_log(names.settings(bindings=["invoice.*"]))
    await log.start(Collector(), warm_seconds=0)
    try:
        with pytest.raises(SourceError, match=r"matches none of amqp\.bindings"):
            await log.append("order.created", b"{}")
        await log.append("invoice.sent", b"{}")
    finally:
        await log.close()


async def test_append_works_without_start_for_a_process_that_only_publishes(
    names: Names,
) -> None:
    log, got = make_log(names.settings()), Collector()
    await log.start(got, warm_seconds=0)
    publisher = make_log(names.settings())
    try:
        await publisher.append("k", b"from the command line")
        await until(lambda: got.bodies == [b"from the command line"], what="the record")
    finally:
        await publisher.close()
        await log.close()
    with pytest.raises(RuntimeError):
        await publisher.append("k", b"after close")


async def test_two_logs_on_one_stream_see_the_same_positions(names: Names) -> None:
    a, b = make_log(names.settings()), make_log(names.settings())
    got_a, got_b = Collector(), Collector()
    await a.start(got_a, warm_seconds=60)
    await b.start(got_b, warm_seconds=60)
    try:
        assert a.epoch == b.epoch
        await publish(names.exchange, [(f"k.{i}", b"%d" % i) for i in range(50)])
        await until(lambda: len(got_a.records) == len(got_b.records) == 50, what="50 each")
        assert [(r.position, r.body) for r in got_a.records] == [
            (r.position, r.body) for r in got_b.records
        ]
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("reader", ["auto", "amqp"])
async def test_messages_arriving_together_come_as_one_batch(names: Names, reader: str) -> None:
    setup = make_log(names.settings())
    await setup.start(Collector(), warm_seconds=0)
    await setup.close()
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(names.exchange, ensure=False)
        # Published together, they are written together: a few stream chunks.
        await asyncio.gather(
            *(exchange.publish(aio_pika.Message(b"%d" % i), routing_key="k") for i in range(2000))
        )
    log, got = make_log(names.settings(reader=reader)), Collector()
    await log.start(got, warm_seconds=60)  # the backlog arrives as fast as it can
    try:
        assert got.bodies == [b"%d" % i for i in range(2000)]
        # aiormq hands over a few messages per read of its channel (a 10-frame buffer),
        # the stream protocol a chunk at a time; either comes as one batch: well under
        # one call per record.
        assert got.batches <= 2000 * 0.8, "records were handed over one by one"
    finally:
        await log.close()


# -- warm-up ------------------------------------------------------------------------------


async def test_warm_up_delivers_the_window_before_start_returns(names: Names) -> None:
    setup = make_log(names.settings())
    await setup.start(Collector(), warm_seconds=0)  # declares the exchange and the stream
    await setup.close()
    await publish(names.exchange, [("k", b"old-%d" % i) for i in range(3)])
    await asyncio.sleep(2.5 * SCALE)
    await publish(names.exchange, [("k", b"new-%d" % i) for i in range(3)])

    log, got = make_log(names.settings()), Collector()
    await log.start(got, warm_seconds=1 * SCALE)
    try:
        assert got.bodies == [b"new-0", b"new-1", b"new-2"]  # before start() returned
        await log.append("k", b"live")
        await until(lambda: got.bodies[-1:] == [b"live"], what="the live record")
    finally:
        await log.close()


async def test_warm_up_of_zero_seconds_delivers_only_new_events(names: Names) -> None:
    setup = make_log(names.settings())
    await setup.start(Collector(), warm_seconds=0)
    await setup.close()
    await publish(names.exchange, [("k", b"before")])
    log, got = make_log(names.settings()), Collector()
    await log.start(got, warm_seconds=0)
    try:
        assert got.records == []
        await log.append("k", b"after")
        await until(lambda: got.bodies == [b"after"], what="the new record")
    finally:
        await log.close()


# -- start-up errors ----------------------------------------------------------------------


async def test_an_exchange_of_another_type_is_refused_with_a_clear_message(names: Names) -> None:
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    log = make_log(names.settings(exchange_type="topic"))
    with pytest.raises(SourceError) as caught:
        await log.start(Collector(), warm_seconds=0)
    message = str(caught.value)
    assert names.exchange in message and "amqp.exchange_type = 'topic'" in message
    assert "fanout" in message and "\n" not in message
    assert not log.ready


async def test_a_missing_exchange_is_refused_when_tidings_may_not_declare_it(
    names: Names,
) -> None:
    log = make_log(names.settings(declare_exchange=False))
    with pytest.raises(SourceError, match=r"does not exist.*amqp\.declare_exchange"):
        await log.start(Collector(), warm_seconds=0)


async def test_a_stream_with_other_retention_is_refused(names: Names) -> None:
    first = make_log(names.settings(stream_max_age=3600.0))
    await first.start(Collector(), warm_seconds=0)
    await first.close()
    log = make_log(names.settings(stream_max_age=7200.0))
    with pytest.raises(SourceError, match=r"amqp.stream_max_age.*delete the queue"):
        await log.start(Collector(), warm_seconds=0)


async def test_wrong_credentials_are_a_source_error(names: Names) -> None:
    log = make_log(names.settings(url=f"amqp://guest:wrong@{HOST}:{PORT}/"))
    with pytest.raises(SourceError, match="refused the login of user 'guest'") as caught:
        await log.start(Collector(), warm_seconds=0)
    assert "wrong" not in str(caught.value)  # the password is never printed


async def test_an_unreachable_broker_fails_fast(names: Names) -> None:
    port = free_port()
    log = make_log(names.settings(url=f"amqp://guest:guest@{HOST}:{port}/"))
    started = time.monotonic()
    with pytest.raises(SourceError, match=f"cannot reach RabbitMQ at .*:{port}"):
        await log.start(Collector(), warm_seconds=0)
    assert time.monotonic() - started < 2 * SCALE


async def test_retry_on_start_waits_for_the_broker(
    names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy(free_port())
    log = make_log(names.settings(url=proxy.url, retry_on_start=True))
    caplog.set_level(logging.WARNING, logger="tidings.log.rabbitmq")
    starting = asyncio.create_task(log.start(Collector(), warm_seconds=0))
    await asyncio.sleep(1.0 * SCALE)
    assert not starting.done()
    await proxy.start()
    try:
        await asyncio.wait_for(starting, 10 * SCALE)
        assert log.ready
        assert any("attempt 1" in r.getMessage() for r in caplog.records)
    finally:
        await log.close()
        await proxy.close()


# -- losing the connection ------------------------------------------------------------


@pytest.mark.parametrize("reader", ["auto", "amqp"])
async def test_cut_connections_lose_and_repeat_nothing(names: Names, reader: str) -> None:
    proxy = Proxy()
    await proxy.start()
    log, got = make_log(names.settings(url=proxy.url, reader=reader)), Collector()
    await log.start(got, warm_seconds=60)
    readiness: set[bool] = set()

    async def watch() -> None:
        while True:
            readiness.add(log.ready)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    try:
        await publish_cutting_links(names.exchange, proxy)
        await until(lambda: len(got.records) >= 400, timeout=20, what="400 records")
        await asyncio.sleep(0.2 * SCALE)  # anything repeated would show up by now
        assert got.bodies == [b"%d" % i for i in range(400)]
        assert got.positions == sorted(set(got.positions))
        await until(lambda: log.ready, what="ready again")
        assert readiness == {True, False}  # not ready while the link was down
        assert got.epochs == []
    finally:
        watcher.cancel()
        await log.close()
        await proxy.close()


async def close_connections_named(name: str) -> int:
    """Has the broker close the connections called ``name`` (CONNECTION_FORCED)."""
    listing = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "list_connections",
        "pid",
        "client_properties",
        "-q",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    out, _ = await listing.communicate()
    pids = [
        line.split("\t", 1)[0]
        for line in out.decode().splitlines()
        if f'{{"connection_name","{name}"}}' in line
    ]
    for pid in pids:
        closing = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "close_connection",
            pid,
            "test",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert await closing.wait() == 0
    return len(pids)


async def test_broker_closing_the_connection_loses_and_repeats_nothing(names: Names) -> None:
    name = f"tidings-test-{uuid.uuid4().hex[:8]}"
    log, got = make_log(names.settings(), connection_name=name), Collector()
    await log.start(got, warm_seconds=60)
    try:
        publisher = await aio_pika.connect(URL)
        async with publisher:
            channel = await publisher.channel()
            exchange = await channel.get_exchange(names.exchange, ensure=False)

            async def publish_all() -> None:
                for i in range(300):
                    await exchange.publish(aio_pika.Message(b"%d" % i), routing_key="k")
                    await asyncio.sleep(0.005)

            publishing = asyncio.create_task(publish_all())
            await asyncio.sleep(0.3 * SCALE)
            # Only this log's connection: the broker may be shared with other test runs.
            assert await close_connections_named(name) == 1
            await asyncio.wait_for(publishing, 30 * SCALE)
        truth = [
            (p, body) for p, body, h in await read_stream(names.stream) if CONTROL_HEADER not in h
        ]
        await until(lambda: len(got.records) >= len(truth), timeout=20, what="all records")
        assert [(r.position, r.body) for r in got.records] == truth
        assert got.bodies == [b"%d" % i for i in range(300)]
        await until(lambda: log.ready, what="ready again")
    finally:
        await log.close()


# -- the two readers -----------------------------------------------------------------------


async def appended_come_back(log: RabbitMqLog, got: Collector, n: int = 3) -> None:
    for i in range(n):
        await log.append("k", b"%d" % i)
    await until(lambda: len(got.records) >= n, what=f"{n} records")
    assert got.bodies[-n:] == [b"%d" % i for i in range(n)]


@pytest.mark.usefixtures("stream_protocol")
@pytest.mark.parametrize("reader", ["auto", "stream", "amqp"])
async def test_the_stream_protocol_reads_unless_amqp_is_asked_for(
    names: Names, reader: str
) -> None:
    log, got = make_log(names.settings(reader=reader)), Collector()
    await log.start(got, warm_seconds=0)
    try:
        assert log.reader == ("amqp" if reader == "amqp" else "stream")
        await appended_come_back(log, got)
    finally:
        await log.close()


async def test_a_required_stream_protocol_that_is_unreachable_is_refused(names: Names) -> None:
    log = make_log(names.settings(reader="stream", stream_port=free_port()))
    with pytest.raises(SourceError) as error:
        await log.start(Collector(), warm_seconds=0)
    text = str(error.value)
    assert "stream protocol" in text and "rabbitmq_stream" in text
    assert "amqp.stream_port" in text and "amqp.reader" in text


async def test_auto_reads_over_amqp_when_the_stream_protocol_is_unreachable(
    names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tidings.log.rabbitmq")
    log, got = make_log(names.settings(stream_port=free_port())), Collector()
    await log.start(got, warm_seconds=0)
    try:
        assert log.reader == "amqp"
        assert any("over AMQP 0-9-1" in r.getMessage() for r in caplog.records)
        await appended_come_back(log, got)
    finally:
        await log.close()


@pytest.mark.usefixtures("stream_protocol")
async def test_both_readers_give_the_same_records(names: Names) -> None:
    setup = make_log(names.settings())
    await setup.start(Collector(), warm_seconds=0)
    await setup.close()
    headers: list[dict[str, Any]] = [
        {"x-tidings-channel": "user#1", "account_id": 42},
        {"flag": True, "ratio": 1.5, "big": 2**40, "none": None},
        {"text": "caf\u00e9", "empty": ""},
        {"table": {"a": 1, "b": "two"}, "array": [1, "x"]},
        {},
    ]
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(names.exchange, ensure=False)
        for i, h in enumerate(headers):
            message = aio_pika.Message(
                b"body-%d" % i, headers=h, message_id=f"id-{i}", timestamp=1_700_000_000 + i
            )
            await exchange.publish(message, routing_key=f"key.{i}")
    seen = {}
    for reader in ("stream", "amqp"):
        log, got = make_log(names.settings(reader=reader)), Collector()
        await log.start(got, warm_seconds=60)
        await log.close()
        assert log.reader == reader
        seen[reader] = [
            (r.position, r.routing_key, r.body, r.timestamp, r.headers) for r in got.records
        ]
    assert len(seen["stream"]) == len(headers)
    assert seen["stream"] == seen["amqp"]


@pytest.mark.usefixtures("stream_protocol")
@pytest.mark.parametrize("warm_seconds", [0, 3600], ids=["from-next", "warm-window"])
async def test_starting_while_events_arrive_loses_and_repeats_nothing(
    names: Names, warm_seconds: int
) -> None:
    """With a warm window the stream protocol reads from a time on; without one, AMQP
    0-9-1 reads from "next" and hands over to the stream protocol at the next offset."""
    first = make_log(names.settings())
    await first.start(Collector(), warm_seconds=0)
    await first.close()
    await publish(names.exchange, [("k", b"%d" % i) for i in range(1000)])
    log, got = make_log(names.settings()), Collector()

    async def more() -> None:
        await publish(names.exchange, [("k", b"%d" % i) for i in range(1000, 1300)])

    publishing = asyncio.create_task(more())
    await log.start(got, warm_seconds=warm_seconds)
    try:
        assert log.reader == "stream"
        await publishing
        await publish(names.exchange, [("k", b"%d" % i) for i in range(1300, 1500)])
        await until(lambda: got.bodies[-1:] == [b"1499"], timeout=20, what="the last record")
        await asyncio.sleep(0.2 * SCALE)  # anything repeated would show up by now
        first_read = 0 if warm_seconds else int(got.bodies[0])
        assert first_read >= (0 if warm_seconds else 1000)
        assert got.bodies == [b"%d" % i for i in range(first_read, 1500)]
        assert got.positions == sorted(set(got.positions))
    finally:
        await log.close()


@pytest.mark.usefixtures("stream_protocol")
async def test_cut_stream_protocol_links_lose_and_repeat_nothing(names: Names) -> None:
    proxy = Proxy(upstream=STREAM_PORT)
    await proxy.start()
    log, got = make_log(names.settings(stream_port=proxy.port)), Collector()
    await log.start(got, warm_seconds=60)
    try:
        assert log.reader == "stream"
        await publish_cutting_links(names.exchange, proxy, log)
        await until(lambda: len(got.records) >= 400, timeout=20, what="400 records")
        await asyncio.sleep(0.2 * SCALE)
        assert got.bodies == [b"%d" % i for i in range(400)]
        assert got.positions == sorted(set(got.positions))
        await until(lambda: log.ready, what="ready again")
        assert log.reader == "stream"
        assert got.epochs == []  # the same stream was recognised across protocols
    finally:
        await log.close()
        await proxy.close()


# -- epoch --------------------------------------------------------------------------------


async def test_the_epoch_is_shared_and_survives_restarts(names: Names) -> None:
    settings = names.settings()
    a = make_log(settings, beacon_interval=0.4 * SCALE)
    await a.start(Collector(), warm_seconds=0)
    try:
        await asyncio.sleep(1.5 * SCALE)  # a few beacon intervals
        b = make_log(settings, beacon_interval=0.4 * SCALE)
        await b.start(Collector(), warm_seconds=0)
        assert b.epoch == a.epoch
        await b.close()
    finally:
        await a.close()
    again = make_log(settings)
    await again.start(Collector(), warm_seconds=0)
    await again.close()
    assert again.epoch == a.epoch
    beacons = [
        h for _, _, h in await read_stream(names.stream) if h.get(CONTROL_HEADER) == "beacon"
    ]
    assert len(beacons) >= 2, "beacons were not refreshed"
    assert {h["x-tidings-epoch"] for h in beacons} == {a.epoch}


async def test_the_warm_up_read_names_the_epoch_without_a_scan(
    names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_log(names.settings())
    await first.start(Collector(), warm_seconds=0)
    await first.close()
    caplog.set_level(logging.INFO, logger="tidings.log.rabbitmq")
    caplog.clear()
    log = make_log(names.settings())
    await log.start(Collector(), warm_seconds=3600)  # longer than 3 beacon intervals
    try:
        assert log.epoch == first.epoch
        assert not any("no epoch beacon" in r.getMessage() for r in caplog.records)
    finally:
        await log.close()


async def test_concurrent_starts_on_a_fresh_stream_agree(names: Names) -> None:
    logs = [make_log(names.settings()) for _ in range(4)]
    first = logs[0]
    await first.start(Collector(), warm_seconds=0)  # the exchange and stream exist now
    await first.close()
    await delete_queue(names.stream)
    try:
        await asyncio.gather(*(log.start(Collector(), warm_seconds=0) for log in logs[1:]))
        assert len({log.epoch for log in logs[1:]}) == 1
        assert logs[1].epoch != first.epoch
    finally:
        for log in logs:
            await log.close()


@pytest.mark.parametrize("reader", ["auto", "amqp"])
async def test_a_recreated_stream_is_a_new_epoch(names: Names, reader: str) -> None:
    a, b = make_log(names.settings(reader=reader)), make_log(names.settings(reader=reader))
    got_a, got_b = Collector(), Collector()
    await a.start(got_a, warm_seconds=60)
    await b.start(got_b, warm_seconds=60)
    try:
        old = a.epoch
        for i in range(5):
            await a.append("k", b"old-%d" % i)
        await until(lambda: len(got_a.records) == len(got_b.records) == 5, what="old records")
        old_last = got_a.positions[-1]

        await delete_queue(names.stream)
        await until(lambda: bool(got_a.epochs and got_b.epochs), what="on_epoch on both")
        await until(lambda: a.ready and b.ready, what="both ready")
        assert a.epoch == b.epoch == got_a.epochs[-1] == got_b.epochs[-1] != old

        for i in range(3):
            await b.append("k", b"new-%d" % i)
        await until(lambda: len(got_a.records) == len(got_b.records) == 3, what="new records")
        assert got_a.bodies == got_b.bodies == [b"new-0", b"new-1", b"new-2"]
        assert got_a.positions == got_b.positions
        assert got_a.positions[0] <= old_last  # positions restarted: hence the new epoch
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("new_events", [1, 100], ids=["shorter", "grown-past-it"])
async def test_a_stream_recreated_while_disconnected_is_a_new_epoch(
    names: Names, new_events: int
) -> None:
    """Shorter, the new stream shows offsets going backwards; grown past the node's
    position, it holds another message at the last offset the node read."""
    proxy = Proxy()
    await proxy.start()
    log, got = make_log(names.settings(url=proxy.url)), Collector()
    await log.start(got, warm_seconds=60)
    try:
        old = log.epoch
        for i in range(30):
            await log.append("k", b"old-%d" % i)
        await until(lambda: len(got.records) == 30, what="old records")
        if new_events > 1:
            assert got.positions[-1] < new_events  # the new stream grows past the node
        await proxy.close()  # down, and refusing new connections
        await delete_queue(names.stream)
        other = make_log(names.settings())
        await other.start(Collector(), warm_seconds=0)  # recreates the stream, new epoch
        await publish(names.exchange, [("k", b"new-%d" % i) for i in range(new_events)])
        await proxy.start()
        await until(lambda: bool(got.epochs), what="on_epoch")
        await until(lambda: log.ready, what="ready")
        assert log.epoch == other.epoch == got.epochs[-1] != old
        assert got.bodies == [b"new-%d" % i for i in range(new_events)]
        await other.close()
    finally:
        await log.close()
        await proxy.close()


# -- quarantine ---------------------------------------------------------------------------


async def test_quarantine_copies_land_in_the_quarantine_exchange(names: Names) -> None:
    log = make_log(names.settings(quarantine_exchange=names.quarantine))
    await log.start(Collector(), warm_seconds=0)
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        inbox = await channel.declare_queue(exclusive=True)
        await inbox.bind(names.quarantine)
        record = Record(17, "invoice.paid", b"not json", 1_700_000_000.0, {"account_id": 42})
        log.quarantine(record, "not_json", "body is not JSON")
        message = None
        for _ in range(200):
            message = await inbox.get(fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.02)
        assert message is not None
        assert message.body == b"not json"
        assert message.routing_key == "invoice.paid"
        assert message.headers["account_id"] == 42
        assert message.headers["x-tidings-reject-kind"] == "not_json"
        assert message.headers["x-tidings-reject-reason"] == "body is not JSON"
        assert message.headers["x-tidings-position"] == 17
        assert message.headers["x-tidings-epoch"] == log.epoch
        assert log.quarantine_failed == 0
    finally:
        await connection.close()
        await log.close()


async def test_a_quarantine_copy_nobody_receives_is_logged(
    names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log(names.settings(quarantine_exchange=names.quarantine))
    await log.start(Collector(), warm_seconds=0)
    try:
        log.quarantine(Record(3, "k", b"x", time.time()), "too_large", "over 64 KiB")
        await until(lambda: log.quarantine_failed == 1, what="the failure counted")
        assert any("no queue bound" in r.getMessage() for r in caplog.records)
    finally:
        await log.close()
