"""Reading a past range of the stream again (tidings.log.scan), against a real RabbitMQ."""

from __future__ import annotations

import asyncio

import pytest

from tests.log.live import Collector, Names, make_log, publish, until
from tidings.log.base import ScanUnavailable
from tidings.log.scan import BATCH

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


async def test_a_range_is_read_again_as_the_tail_read_it(
    names: Names, stream_protocol: None
) -> None:
    log, got = make_log(names.settings(reader="stream")), Collector()
    await log.start(got, warm_seconds=0)
    try:
        count = 3 * BATCH
        await publish(names.exchange, [(f"k.{n % 7}", b'{"n": %d}' % n) for n in range(count)])
        await until(lambda: len(got.records) == count, what="the events")
        assert log.scans
        positions = got.positions
        after, last = positions[10], positions[-5]
        scanned = [r async for batch in log.scan(after, last) for r in batch]
        expected = [r for r in got.records if after < r.position <= last]
        assert [(r.position, r.body, r.routing_key) for r in scanned] == [
            (r.position, r.body, r.routing_key) for r in expected
        ]
        # The start of the stream is still held: from position 0 it reads the first event.
        first = [r async for batch in log.scan(0, positions[0]) for r in batch]
        assert [r.position for r in first][-1:] == [positions[0]]
    finally:
        await log.close()


async def test_leaving_a_read_early_stops_it(names: Names, stream_protocol: None) -> None:
    log, got = make_log(names.settings(reader="stream")), Collector()
    await log.start(got, warm_seconds=0)
    try:
        count = 10 * BATCH
        await publish(names.exchange, [("k", b"{}")] * count)
        await until(lambda: len(got.records) == count, what="the events")
        batches = log.scan(got.positions[0], got.positions[-1])
        first = await anext(batches)
        assert len(first) > 0
        await asyncio.wait_for(batches.aclose(), 5)
        # A new read works at once after it.
        again = [r async for batch in log.scan(got.positions[-3], got.positions[-1]) for r in batch]
        assert [r.position for r in again] == got.positions[-2:]
    finally:
        await log.close()


async def test_a_log_reading_over_amqp_only_does_not_scan(names: Names) -> None:
    log, got = make_log(names.settings(reader="amqp")), Collector()
    await log.start(got, warm_seconds=0)
    try:
        assert not log.scans
        with pytest.raises(ScanUnavailable):
            log.scan(0, 1)
    finally:
        await log.close()
