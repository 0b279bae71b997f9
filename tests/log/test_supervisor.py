"""Resuming on a real RabbitMQ: links cut, connections closed by the broker, streams
recreated under the log; nothing lost, nothing repeated, a new epoch when due.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import aio_pika
import pytest

from tests.log.live import (
    SCALE,
    STREAM_PORT,
    URL,
    Collector,
    Names,
    Proxy,
    delete_queue,
    make_log,
    publish,
    publish_cutting_links,
    read_stream,
    until,
)
from tidings.log.control import CONTROL_HEADER

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


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


# -- another stream under the same name ---------------------------------------------------


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
