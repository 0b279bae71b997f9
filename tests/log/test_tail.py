"""The consumer on a real RabbitMQ: the warm-up window, and the two readers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import pytest

from tests.integration.live import free_port
from tests.log.live import SCALE, URL, Collector, Names, make_log, publish, until
from tidings.log.rabbitmq import RabbitMqLog, SourceError

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


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
