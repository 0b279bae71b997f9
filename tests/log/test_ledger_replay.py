"""The ledger's replay without a broker: a simulated stream of writes and snapshots
(written late, in parts, between other writes), read from every possible first offset,
gives exactly the table of a read from offset 0, with merges that are neither idempotent
nor commutative."""

from __future__ import annotations

import random

import pytest

from tidings.log.ledger_replay import Replay
from tidings.log.ledger_wire import Mark, Record, SnapshotPart, Write, split_snapshot
from tidings.log.memory import MemoryLedger

WRITER, OTHER = b"w" * 16, b"o" * 16


def _append(held: bytes | None, written: bytes | None) -> bytes | None:
    # Order matters and a write applied twice shows: any slip changes the result.
    if written is None:
        return None
    return (held or b"") + written


def _table() -> MemoryLedger:
    ledger = MemoryLedger()
    ledger.merge("log", _append)
    return ledger


def _stream(seed: int, writes: int = 400, every: int = 40) -> list[Record]:
    """Writes, and every ``every`` writes a snapshot of the table of a while before,
    in several parts with writes between them, as ledgers on several nodes would."""
    rng = random.Random(seed)
    truth = _table()
    stream: list[Record] = []
    pending: list[SnapshotPart] = []
    for i in range(writes):
        kind = rng.choice(["log", "lww"])
        key = f"k{rng.randrange(6)}"
        value = None if rng.random() < 0.1 else b"%d," % i
        stream.append(Write(rng.choice([WRITER, OTHER]), i, kind, key, value))
        truth.apply(kind, key, value)
        if i % every == every - 1:
            parts = split_snapshot(truth.snapshot(), len(stream) - 1, b"%015d!" % i, 40)
            pending.extend(parts)
        if pending and rng.random() < 0.5:
            stream.append(pending.pop(0))
    stream.extend(pending)
    return stream


def _replay(stream: list[Record], first: int) -> tuple[MemoryLedger, Replay, list[Record]]:
    ledger, seen = _table(), []
    replay = Replay(ledger, seen.append)
    for offset in range(first, len(stream)):
        replay.feed(offset, stream[offset], 10)
    return ledger, replay, seen


@pytest.mark.parametrize("seed", range(5))
def test_a_replay_from_any_first_offset_is_exact(seed: int) -> None:
    stream = _stream(seed)
    whole, replay, seen = _replay(stream, 0)
    assert replay.live and len(seen) == sum(isinstance(r, Write) for r in stream)
    exact = 0
    for first in range(1, len(stream)):
        ledger, replay, seen = _replay(stream, first)
        if replay.live:
            exact += 1
            assert ledger.snapshot() == whole.snapshot(), f"from offset {first}"
            # Every write read was reported once, in order, covered or applied.
            assert seen == [r for r in stream[first:] if isinstance(r, Write)]
    # Only the tail after the last whole snapshot cannot be rebuilt.
    assert exact > len(stream) * 0.7


def test_a_snapshot_older_than_the_first_offset_is_not_used() -> None:
    snapshot = split_snapshot({"lww": {"a": b"old"}}, 0, OTHER, 1000)[0]
    stream: list[Record] = [
        Write(WRITER, 0, "lww", "a", b"old"),
        Write(WRITER, 1, "lww", "b", b"lost"),  # dropped by the retention
        Write(WRITER, 2, "lww", "c", b"kept"),
        snapshot,
    ]
    ledger, replay, _ = _replay(stream, 2)
    assert not replay.live and ledger.snapshot() == {}
    # At the end of the stream, the best there is: said to be inexact from offset 2.
    assert replay.settle() == 2
    assert replay.live and ledger.snapshot() == {"lww": {"a": b"old", "c": b"kept"}}
    assert replay.settle() == -1


def test_a_snapshot_missing_its_first_part_is_not_used() -> None:
    parts = split_snapshot({"lww": {"a": b"1", "b": b"2"}}, 0, OTHER, 5)
    assert len(parts) == 2
    stream: list[Record] = [Write(WRITER, 0, "lww", "a", b"1"), parts[0], parts[1]]
    _, replay, _ = _replay(stream, 2)
    assert not replay.live


def test_a_snapshot_cut_short_is_not_used_and_the_next_whole_one_is() -> None:
    # Its writer lost the broker after the first part: the second never came.
    short = split_snapshot({"lww": {"a": b"1", "b": b"2"}}, 1, b"s" * 16, 5)
    whole = split_snapshot({"lww": {"a": b"1", "b": b"3"}}, 3, b"t" * 16, 5)
    stream: list[Record] = [
        Write(WRITER, 0, "lww", "a", b"1"),
        Write(WRITER, 1, "lww", "b", b"2"),
        short[0],
        Write(WRITER, 2, "lww", "b", b"3"),
        whole[0],
        Write(WRITER, 3, "lww", "c", b"4"),
        whole[1],
    ]
    _, replay, _ = _replay(stream[:5], 2)
    assert not replay.live  # the short snapshot never completes
    for first in (1, 2):
        ledger, replay, _ = _replay(stream, first)
        assert replay.live and ledger.snapshot() == {"lww": {"a": b"1", "b": b"3", "c": b"4"}}


def test_records_read_again_are_skipped_and_records_lost_seek_again() -> None:
    ledger, seen = _table(), []
    replay = Replay(ledger, seen.append)
    replay.feed(0, Write(WRITER, 0, "log", "a", b"x"), 10)
    replay.feed(1, Write(WRITER, 1, "log", "a", b"y"), 10)
    replay.feed(1, Write(WRITER, 1, "log", "a", b"y"), 10)  # again, after a reconnect
    replay.feed(0, Write(WRITER, 0, "log", "a", b"x"), 10)
    assert ledger.get("log", "a") == b"xy" and replay.next == 2
    replay.feed(4, Write(WRITER, 2, "log", "a", b"w"), 10)  # offsets RabbitMQ kept for itself
    assert replay.live and ledger.get("log", "a") == b"xyw"
    # Offsets 5 to 7 were dropped before they were read: not exact until a snapshot.
    replay.lost(8)
    replay.feed(8, Write(WRITER, 8, "log", "a", b"z"), 10)
    assert not replay.live and ledger.get("log", "a") == b"xyw"
    replay.feed(9, split_snapshot({"log": {"a": b"xywQRS"}}, 7, OTHER, 1000)[0], 100)
    assert replay.live and ledger.get("log", "a") == b"xywQRSz"


def test_an_unreadable_record_takes_its_offset_only() -> None:
    ledger, seen = _table(), []
    replay = Replay(ledger, seen.append)
    replay.feed(0, Write(WRITER, 0, "log", "a", b"x"), 10)
    replay.feed(1, None, 10)
    replay.feed(2, Mark(WRITER, 1), 10)
    assert replay.live and replay.next == 3 and seen[-1] == Mark(WRITER, 1)


def test_bytes_since_a_snapshot_start_over_at_its_first_part() -> None:
    replay = Replay(_table(), lambda record: None)
    replay.feed(0, Write(WRITER, 0, "log", "a", b"x"), 30)
    replay.feed(1, Mark(WRITER, 1), 20)
    assert replay.since_snapshot == 50
    parts = split_snapshot({"log": {"a": b"x", "b": b"y"}}, 1, OTHER, 5)
    replay.feed(2, parts[0], 1000)
    replay.feed(3, Write(WRITER, 2, "log", "a", b"x"), 30)
    replay.feed(4, parts[1], 1000)
    assert replay.since_snapshot == 30
