"""The embedded memory log."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tidings.log.base import RangeGone
from tidings.log.memory import MemoryLog
from tidings.record import Record


class Consumer:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.batches = 0

    def on_records(self, records: Sequence[Record]) -> None:
        self.records.extend(records)
        self.batches += 1

    def on_epoch(self, epoch: str) -> None:  # pragma: no cover - the memory log never calls it
        raise AssertionError(epoch)

    def on_reject(self, record: Record, kind: str, reason: str) -> None:  # pragma: no cover
        raise AssertionError(kind)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_positions_start_at_one_and_deliver_synchronously() -> None:
    clock = Clock()
    log = MemoryLog(clock=clock)
    consumer = Consumer()
    assert log.position == 0 and not log.ready
    await log.start(consumer, 60)
    assert log.ready and consumer.records == []
    await log.append("a.b", b'{"n":1}', {"h": "v"})
    await log.append("a.c", b"2")
    assert [(r.position, r.routing_key, r.body) for r in consumer.records] == [
        (1, "a.b", b'{"n":1}'),
        (2, "a.c", b"2"),
    ]
    assert consumer.records[0].headers == {"h": "v"}
    assert consumer.records[1].headers == {}
    assert consumer.records[0].timestamp == 1000.0
    assert log.position == 2


async def test_start_delivers_the_warm_window() -> None:
    clock = Clock()
    log = MemoryLog(clock=clock)
    await log.append("old", b"1")
    clock.now += 100
    await log.append("new", b"2")
    consumer = Consumer()
    await log.start(consumer, 50)
    assert [r.routing_key for r in consumer.records] == ["new"]
    assert consumer.batches == 1
    assert log.position == 2


async def test_start_with_nothing_warm_delivers_nothing() -> None:
    log = MemoryLog(clock=Clock())
    consumer = Consumer()
    await log.start(consumer, 60)
    assert consumer.batches == 0


async def test_retention_by_age_and_count() -> None:
    clock = Clock()
    log = MemoryLog(retention_seconds=10, max_records=3, clock=clock)
    for i in range(5):
        await log.append("k", b"%d" % i)
    consumer = Consumer()
    await log.start(consumer, 3600)
    assert [r.position for r in consumer.records] == [3, 4, 5]
    clock.now += 11
    await log.append("k", b"late")
    late = Consumer()
    await log.start(late, 3600)
    assert [r.position for r in late.records] == [6]


async def test_epoch_is_new_per_instance() -> None:
    a, b = MemoryLog(), MemoryLog()
    assert a.epoch and a.epoch != b.epoch
    assert a.epoch == a.epoch


async def test_close() -> None:
    log = MemoryLog()
    consumer = Consumer()
    await log.start(consumer, 1)
    await log.close()
    assert not log.ready
    with pytest.raises(RuntimeError):
        await log.append("k", b"1")
    assert consumer.records == []


async def test_quarantine_is_a_no_op() -> None:
    log = MemoryLog()
    assert log.quarantine(Record(1, "k", b"x", 0.0), "not_json", "bad") is None


async def _scanned(log: MemoryLog, after: int, until: int) -> list[list[int]]:
    return [[r.position for r in batch] async for batch in log.scan(after, until)]


async def _holding(count: int, batch: int, max_records: int = 100_000) -> MemoryLog:
    log = MemoryLog(max_records=max_records)
    log.SCAN_BATCH = batch
    await log.start(Consumer(), 0)
    for n in range(count):
        await log.append("k", b"%d" % n)
    return log


async def test_scan_reads_a_range_again_in_batches() -> None:
    log = await _holding(10, 3)
    assert log.scans
    assert await _scanned(log, 2, 9) == [[3, 4, 5], [6, 7, 8], [9]]
    assert await _scanned(log, 9, 9) == []


async def test_scan_of_a_range_whose_start_is_gone_raises() -> None:
    log = await _holding(10, 1000, max_records=4)
    assert await _scanned(log, 6, 10) == [[7, 8, 9, 10]]
    with pytest.raises(RangeGone) as gone:
        await _scanned(log, 5, 10)
    assert gone.value.first == 7


async def test_scan_takes_no_record_appended_after_it_started() -> None:
    log = await _holding(3, 1)
    seen = []
    async for batch in log.scan(0, 3):
        seen.extend(r.position for r in batch)
        await log.append("k", b"later")
    assert seen == [1, 2, 3]
