"""Recoveries from the log (tidings.recovery): shared reads, bounds, the hand-over to the
window. The embedded memory log, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import orjson
import pytest

from tests.fakes import settings
from tidings.config import ChannelOptions, RecoverySettings
from tidings.log.memory import MemoryLog
from tidings.node import Node
from tidings.protocol.messages import RecoverPosition
from tidings.protocol.operations import NotRecovered, Recovered
from tidings.record import Record
from tidings.recovery import (
    PUBLICATIONS_PER_RELEASE,
    RELEASE_PER_TURN,
    Failed,
    Found,
    Recoverer,
    Removal,
)
from tidings.router import Routed

pytestmark = pytest.mark.asyncio

BOUNDS = RecoverySettings()


class Routes:
    """Routes a record to the channel named by its routing key; counts the records."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, record: Record) -> Routed | Removal | None:
        self.calls += 1
        if record.routing_key.startswith("remove:"):
            return Removal(record.routing_key.removeprefix("remove:"))
        if record.routing_key == "-":
            return None
        return Routed((record.routing_key,), record.body)


class SlowLog(MemoryLog):
    """A memory log whose scans wait ``pause`` seconds before every batch."""

    def __init__(self, pause: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pause = pause
        self.reading = 0
        self.most_reading = 0

    async def scan(self, after: int, until: int) -> AsyncGenerator[Sequence[Record], None]:
        self.reading += 1
        self.most_reading = max(self.most_reading, self.reading)
        try:
            async for batch in super().scan(after, until):
                await asyncio.sleep(self.pause)
                yield batch
        finally:
            self.reading -= 1


async def filled(log: MemoryLog, keys: Sequence[str]) -> MemoryLog:
    class Nobody:
        def on_records(self, records: Sequence[Record]) -> None:
            pass

        def on_epoch(self, epoch: str) -> None:  # pragma: no cover
            pass

    await log.start(Nobody(), 0)
    for n, key in enumerate(keys, 1):
        await log.append(key, orjson.dumps({"n": n}))
    return log


def recoverer(
    log: MemoryLog, routes: Routes | None = None, bounds: RecoverySettings = BOUNDS, **kw: Any
) -> Recoverer:
    return Recoverer(
        log,
        routes or Routes(),
        head=kw.get("head", lambda: log.position),
        epoch=kw.get("epoch", lambda: log.epoch),
        settings=bounds,
    )


def always(_channel: str, _until: int) -> bool:
    return True


def offsets(found: Found | Failed) -> list[int]:
    assert isinstance(found, Found), found
    return [pub.offset for pub in found.publications]


async def test_a_recovery_gets_its_channel_after_its_position_up_to_the_head() -> None:
    log = await filled(MemoryLog(), ["a", "b", "a", "b", "a", "-", "a"])
    found = await recoverer(log).recover("a", 1, 100, always)
    assert offsets(found) == [3, 5, 7]
    assert isinstance(found, Found) and found.until == 7
    assert [orjson.loads(p.data) for p in found.publications] == [{"n": 3}, {"n": 5}, {"n": 7}]


async def test_recoveries_waiting_together_share_one_read_and_one_routing_per_record() -> None:
    keys = [f"u{n % 10}" for n in range(200)]
    log = await filled(MemoryLog(), keys)
    routes = Routes()
    rec = recoverer(log, routes)
    found = await asyncio.gather(
        *(rec.recover(f"u{n}", 100 + n * 5, 100, always) for n in range(10)),
        rec.recover("u0", 0, 100, always),
    )
    assert rec.scans == 1
    assert routes.calls == 200  # from the smallest position, once each
    for n in range(10):
        expected = [p for p in range(1, 201) if (p - 1) % 10 == n and p > 100 + n * 5]
        assert offsets(found[n]) == expected
    assert offsets(found[10]) == list(range(1, 201, 10))


async def test_a_recovery_coming_during_a_read_waits_for_the_next_and_reads_are_bounded() -> None:
    log = await filled(SlowLog(0.01), ["a", "b"] * 50)
    log.SCAN_BATCH = 10
    rec = recoverer(log, bounds=RecoverySettings(max_scans=1))
    first = asyncio.ensure_future(rec.recover("a", 0, 100, always))
    await asyncio.sleep(0.03)  # the first read is under way
    later = await asyncio.gather(*(rec.recover("b", 50, 100, always) for _ in range(5)))
    assert offsets(await first) == list(range(1, 101, 2))
    assert all(offsets(f) == list(range(52, 101, 2)) for f in later)
    assert rec.scans == 2 and log.most_reading == 1


async def test_more_publications_than_the_limit_fail_with_none_given() -> None:
    log = await filled(MemoryLog(), ["a", "b"] * 10)
    rec = recoverer(log)
    over, within = await asyncio.gather(
        rec.recover("a", 0, 9, always), rec.recover("b", 0, 10, always)
    )
    assert over == Failed("too_many")
    assert len(offsets(within)) == 10


async def test_a_position_too_far_behind_fails_without_reading() -> None:
    log = await filled(MemoryLog(), ["a"] * 20)
    routes = Routes()
    rec = recoverer(log, routes, RecoverySettings(max_records=10))
    assert await rec.recover("a", 9, 100, always) == Failed("too_far")
    assert routes.calls == 0
    assert len(offsets(await rec.recover("a", 10, 100, always))) == 10


async def test_a_recovery_over_its_time_fails_and_the_read_stops_when_nobody_waits() -> None:
    log = await filled(SlowLog(0.05), ["a"] * 100)
    log.SCAN_BATCH = 5
    routes = Routes()
    rec = recoverer(log, routes, RecoverySettings(max_seconds=0.12))
    assert await rec.recover("a", 0, 1000, always) == Failed("timeout")
    await asyncio.sleep(0.15)
    assert routes.calls < 30 and log.reading == 0


async def test_a_start_the_log_no_longer_holds_fails_and_the_others_are_read() -> None:
    log = await filled(MemoryLog(max_records=10), ["a"] * 30)
    rec = recoverer(log)
    gone, kept = await asyncio.gather(
        rec.recover("a", 5, 100, always), rec.recover("a", 25, 100, always)
    )
    assert gone == Failed("gone")
    assert offsets(kept) == [26, 27, 28, 29, 30]


async def test_a_history_removal_inside_the_range_fails_the_channel() -> None:
    log = await filled(MemoryLog(), ["a", "b", "remove:a", "a", "b"])
    rec = recoverer(log)
    before, after, other = await asyncio.gather(
        rec.recover("a", 1, 100, always),
        rec.recover("a", 3, 100, always),
        rec.recover("b", 0, 100, always),
    )
    assert before == Failed("removed")
    assert offsets(after) == [4]
    assert offsets(other) == [2, 5]


async def test_the_read_goes_on_until_the_window_covers_where_it_stopped() -> None:
    log = await filled(SlowLog(0.01), ["a"] * 10)
    log.SCAN_BATCH = 5
    stops: list[int] = []

    def covers(_channel: str, until: int) -> bool:
        stops.append(until)
        return len(stops) > 1

    rec = recoverer(log)
    reading = asyncio.ensure_future(rec.recover("a", 2, 100, covers))
    await asyncio.sleep(0.005)  # the first read is under way, up to 10
    for _ in range(5):
        await log.append("a", b"{}")
    found = await reading
    assert stops == [10, 15]
    assert offsets(found) == list(range(3, 16))  # once each, in order
    assert rec.scans == 2


async def test_a_change_of_epoch_or_a_log_that_cannot_scan_fails() -> None:
    log = await filled(MemoryLog(), ["a"] * 5)
    epochs = iter(["one", "two"])
    changed = recoverer(log, epoch=lambda: next(epochs))
    assert await changed.recover("a", 0, 100, always) == Failed("epoch")
    await log.close()
    assert await recoverer(log).recover("a", 0, 100, always) == Failed("unavailable")


async def test_a_recovery_whose_client_left_is_dropped_from_the_read() -> None:
    log = await filled(SlowLog(0.02), ["a"] * 50)
    log.SCAN_BATCH = 5
    routes = Routes()
    rec = recoverer(log, routes)
    task = asyncio.ensure_future(rec.recover("a", 0, 100, always))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.1)
    assert routes.calls < 50 and log.reading == 0


async def _ended_per_turn(rec: Recoverer, asks: list[tuple[str, int]]) -> list[int]:
    """Runs the recoveries together; returns how many ended in each loop turn after the
    first ended."""
    ended: list[Found | Failed] = []

    async def one(channel: str, since: int) -> None:
        ended.append(await rec.recover(channel, since, 100_000, always))

    tasks = [asyncio.ensure_future(one(c, s)) for c, s in asks]
    counts: list[int] = []
    seen = 0
    while len(ended) < len(asks):
        await asyncio.sleep(0)
        if ended or counts:
            counts.append(len(ended) - seen)
            seen = len(ended)
    await asyncio.gather(*tasks)
    assert all(isinstance(f, Found) for f in ended)
    return counts


async def test_a_finished_read_wakes_its_recoveries_a_slice_per_loop_turn() -> None:
    log = await filled(MemoryLog(), [f"u{n % 500}" for n in range(1000)])
    rec = recoverer(log)
    counts = await _ended_per_turn(rec, [(f"u{n}", 0) for n in range(500)])
    assert rec.scans == 1
    assert max(counts) <= RELEASE_PER_TURN
    assert len([c for c in counts if c]) >= 500 // RELEASE_PER_TURN


async def test_a_recovery_carrying_many_publications_takes_more_of_a_turn() -> None:
    heavy = 3 * PUBLICATIONS_PER_RELEASE
    log = await filled(MemoryLog(), ["big"] * heavy + [f"u{n}" for n in range(50)])
    rec = recoverer(log)
    asks = [("big", 0)] * 30 + [(f"u{n}", 0) for n in range(50)]
    counts = await _ended_per_turn(rec, asks)
    # Each "big" counts as 4 recoveries woken: 80 recoveries do not fit in one turn.
    assert len(asks) <= RELEASE_PER_TURN
    assert len([c for c in counts if c]) >= 2 and max(counts) < len(asks)
    assert sum(counts) == len(asks)


async def test_each_recovery_times_out_at_its_own_deadline_from_one_timer() -> None:
    log = await filled(SlowLog(0.05), ["a"] * 100)
    log.SCAN_BATCH = 5
    rec = recoverer(log, bounds=RecoverySettings(max_seconds=0.15))
    first = asyncio.ensure_future(rec.recover("a", 0, 1000, always))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(rec.recover("a", 50, 1000, always))
    assert await first == Failed("timeout")
    assert not second.done()  # its own deadline, 50 ms later
    assert await second == Failed("timeout")
    assert offsets(await recoverer(log).recover("a", 95, 1000, always)) == [96, 97, 98, 99, 100]


# ---------------------------------------------------------------------- the node's hand-over
def node_with_window(size: int, limit: int = 10_000) -> Node:
    options = ChannelOptions(history_size=size, recovery_max_publications=limit)
    return Node(settings(channels=options), MemoryLog(), name="test")


async def published(node: Node, channel: str, count: int, other: str = "user#bob") -> None:
    for n in range(count):
        await node.publish([channel], {"n": n})
        await node.publish([other], {"n": n})


async def test_the_node_reads_the_log_only_where_the_window_no_longer_reaches() -> None:
    node = node_with_window(3)
    await node.start()
    await published(node, "user#alice", 10)
    epoch = node.log.epoch
    assert node.recovers_from_log("user#alice", RecoverPosition(1, epoch))
    assert not node.recovers_from_log("user#alice", RecoverPosition(16, epoch))
    assert not node.recovers_from_log("user#alice", RecoverPosition(1, "other"))
    off = node_with_window(3, limit=0)
    await off.start()
    await published(off, "user#alice", 10)
    assert not off.recovers_from_log("user#alice", RecoverPosition(1, off.log.epoch))


async def test_the_node_hands_over_to_the_window_with_nothing_lost_or_twice() -> None:
    node = node_with_window(2)
    await node.start()
    await published(node, "user#alice", 20)
    position = RecoverPosition(2, node.log.epoch)
    found = await node.recover_from_log(["user#alice"], position)
    read = found["user#alice"]
    assert isinstance(read, Recovered)
    # The subscribe of the same step: the window from where the read stopped.
    outcome = node.subscribe(_Sink(), "user#alice", RecoverPosition(read.position, position.epoch))
    assert outcome.recovery is not None
    joined = outcome.recovery.after_log(read.publications, 10_000)
    assert joined.recovered
    assert [orjson.loads(p.data)["n"] for p in joined.publications] == list(range(1, 20))
    assert outcome.recovery.after_log(read.publications, 18) == type(outcome.recovery)(False)


async def test_the_node_answers_not_recovered_past_its_bounds() -> None:
    node = node_with_window(2, limit=5)
    await node.start()
    await published(node, "user#alice", 20)
    found = await node.recover_from_log(["user#alice"], RecoverPosition(2, node.log.epoch))
    assert found == {"user#alice": NotRecovered("too_many")}
    assert node.metrics.registry.get_sample_value(
        "tidings_recoveries_total", {"outcome": "stream_failed"}
    )


class _Sink:
    def deliver(self, pub: Any) -> None:
        pass

    def deliver_event(self, event: Any) -> None:
        pass
