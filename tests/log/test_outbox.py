"""The events outbox against the real RabbitMQ: confirmed publishing in order, a broker
cut (a proxy between the outbox and 5672 that the test cuts), the bounded buffer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from tests.log.live import SCALE, URL
from tests.log.live import EventTap as Tap
from tests.system.harness import CutProxy
from tidings.config import AmqpSettings
from tidings.log.broker import SourceError
from tidings.log.outbox import RabbitMqOutbox
from tidings.metrics import Metrics

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


@pytest.fixture
async def tap(rabbitmq: None) -> AsyncIterator[Tap]:
    t = Tap(f"test.events.{uuid.uuid4().hex[:10]}")
    await t.start()
    yield t
    await t.stop(delete=True)


def outbox(url: str, exchange: str, buffer: int = 10_000) -> tuple[RabbitMqOutbox, Metrics]:
    settings = AmqpSettings(
        url=url, events_exchange=exchange, events_buffer=buffer, reconnect_interval=0.2
    )
    metrics = Metrics()
    return RabbitMqOutbox(settings, metrics, "test outbox"), metrics


def count(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("tidings_outbox_events_total", {"result": result})
    return value or 0.0


async def test_events_arrive_in_order_with_their_routing_keys(tap: Tap) -> None:
    box, metrics = outbox(URL, tap.exchange)
    await box.start()
    try:
        for i in range(300):  # more than one batch in flight
            box.emit(f"tidings.test.{i % 3}", {"type": "test", "i": i})
        await tap.until_count(300)
    finally:
        await box.close()
    assert [e["i"] for e in tap.events] == list(range(300))
    assert tap.keys[:3] == ["tidings.test.0", "tidings.test.1", "tidings.test.2"]
    assert count(metrics, "published") == 300
    assert metrics.registry.get_sample_value("tidings_outbox_buffered") == 0


async def test_a_broker_cut_loses_nothing_and_keeps_the_order(tap: Tap) -> None:
    proxy = CutProxy()
    await proxy.start()
    box, metrics = outbox(proxy.url, tap.exchange)
    await box.start()
    try:
        box.emit("k", {"i": 0})
        await tap.until_count(1)
        proxy.refusing = True
        assert proxy.cut() > 0
        started = time.monotonic()
        for i in range(1, 51):  # due while the broker is away
            box.emit("k", {"i": i})
        assert time.monotonic() - started < 0.05  # emit never waits for the broker
        await asyncio.sleep(1.0 * SCALE)
        assert len(tap.events) == 1 and box.buffered == 50
        proxy.refusing = False
        await tap.until_count(51, within=30.0)
    finally:
        await box.close()
        await proxy.stop()
    seen = [e["i"] for e in tap.events]
    # A batch whose confirms were lost with the link is sent again: keep first arrivals.
    assert list(dict.fromkeys(seen)) == list(range(51)), seen
    assert count(metrics, "published") >= 51 and count(metrics, "dropped_overflow") == 0


async def test_a_full_buffer_drops_and_counts_without_waiting(tap: Tap) -> None:
    proxy = CutProxy()
    await proxy.start()
    box, metrics = outbox(proxy.url, tap.exchange, buffer=5)
    await box.start()
    try:
        proxy.refusing = True
        proxy.cut()
        started = time.monotonic()
        for i in range(12):
            box.emit("k", {"i": i})
        assert time.monotonic() - started < 0.05
        assert box.buffered == 5 and count(metrics, "dropped_overflow") == 7
        assert metrics.registry.get_sample_value("tidings_outbox_buffered") == 5
        proxy.refusing = False
        await tap.until_count(5, within=30.0)
    finally:
        await box.close()
        await proxy.stop()
    assert list(dict.fromkeys(e["i"] for e in tap.events)) == [0, 1, 2, 3, 4]


async def test_what_is_left_at_shutdown_is_counted(tap: Tap) -> None:
    proxy = CutProxy()
    await proxy.start()
    box, metrics = outbox(proxy.url, tap.exchange)
    await box.start()
    proxy.refusing = True
    proxy.cut()
    box.emit("k", {"i": 1})
    box.emit("k", {"i": 2})
    await box.close()
    await proxy.stop()
    assert count(metrics, "dropped_shutdown") == 2 and box.buffered == 0


async def test_an_exchange_of_another_type_is_refused(rabbitmq: None) -> None:
    name = f"test.events.{uuid.uuid4().hex[:10]}"
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT)
        box, _ = outbox(URL, name)
        try:
            with pytest.raises(SourceError, match=r"amqp\.events_exchange"):
                await box.start()
        finally:
            channel = await connection.channel()
            await channel.exchange_delete(name)
