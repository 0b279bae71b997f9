"""Reading a past range of the stream again (tidings.log.scan), against a real RabbitMQ."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.log.live import Collector, Names, make_log, publish, until
from tidings.config import RecoverySettings
from tidings.log.base import RangeGone, ScanUnavailable
from tidings.log.scan import BATCH
from tidings.recovery import Failed, Found, Recoverer
from tidings.router import Routed

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


@pytest.fixture
def tiny_segments(names: Names) -> Iterator[None]:
    """A broker policy giving this test's stream segments of 4 kB, so that its retention
    (``stream_max_bytes``) drops whole segments after a few hundred events."""
    policy = f"{names.stream}.tiny"
    pattern = "^" + re.escape(names.stream) + "$"
    definition = '{"stream-max-segment-size-bytes": 4000}'
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("needs rabbitmqctl to set a policy")
    subprocess.run(
        [ctl, "set_policy", policy, pattern, definition, "--apply-to", "queues"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield
    finally:
        subprocess.run([ctl, "clear_policy", policy], capture_output=True, timeout=30)


async def test_a_start_retention_dropped_is_gone_and_its_recovery_not_recovered(
    names: Names, stream_protocol: None, tiny_segments: None
) -> None:
    log, got = make_log(names.settings(reader="stream", stream_max_bytes=20_000)), Collector()
    await log.start(got, warm_seconds=0)
    try:
        body = b'{"pad": "%s"}' % (b"x" * 200)
        for _ in range(10):  # in rounds: retention is applied as segments roll over
            await publish(names.exchange, [("k", body)] * 100)
        await until(lambda: len(got.records) == 1000, what="the events")
        first, last = got.positions[0], got.positions[-1]
        with pytest.raises(RangeGone) as gone:
            async for _ in log.scan(first, last):
                pass
        assert first + 1 < gone.value.first <= last
        # Through a recovery: recovered: false, nothing given; a start still held reads.
        rec = Recoverer(
            log,
            lambda record: Routed(("c",), record.body),
            head=lambda: last,
            epoch=lambda: log.epoch,
            settings=RecoverySettings(),
        )
        assert await rec.recover("c", first, 10_000, lambda _c, _u: True) == Failed("gone")
        kept = await rec.recover("c", last - 5, 10_000, lambda _c, _u: True)
        assert isinstance(kept, Found) and len(kept.publications) == 5
    finally:
        await log.close()
