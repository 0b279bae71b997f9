"""The epoch: the pure rules of a beacon scan, then the epoch a real RabbitMQ stream gets
(shared by its nodes, kept across restarts, minted once for nodes starting together)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.log.live import SCALE, Collector, Names, delete_queue, make_log, read_stream
from tidings.log.control import CONTROL_HEADER, Beacon, Marker
from tidings.log.epoch import BeaconScan, ScanResult, new_epoch


def test_scan_takes_the_first_usable_beacon() -> None:
    scan = BeaconScan("m1")
    assert scan.feed(0, None) is None
    assert scan.feed(1, Beacon("old", 900)) is None  # stale: from a longer, earlier stream
    assert scan.feed(2, Marker("someone-else")) is None
    assert scan.feed(3, Beacon("e1", 2)) == ScanResult(Beacon("e1", 2), 3)
    assert scan.skipped == 1


def test_scan_stops_at_its_marker_when_no_beacon_came() -> None:
    scan = BeaconScan("m1")
    assert scan.feed(7, None) is None
    assert scan.feed(8, Marker("m1")) == ScanResult(None, 8)


def test_scan_skips_a_distrusted_epoch() -> None:
    scan = BeaconScan("m1", distrust="gone")
    assert scan.feed(0, Beacon("gone", -1)) is None
    assert scan.feed(1, Beacon("fresh", 0)) == ScanResult(Beacon("fresh", 0), 1)


def test_new_epochs_differ() -> None:
    assert len({new_epoch() for _ in range(100)}) == 100
    assert len(new_epoch()) == 12


@pytest.mark.rabbitmq
@pytest.mark.integration
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


@pytest.mark.rabbitmq
@pytest.mark.integration
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


@pytest.mark.rabbitmq
@pytest.mark.integration
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
