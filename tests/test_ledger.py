"""The ledger's table: writes applied in order, merges, change callbacks, snapshots."""

from __future__ import annotations

import pytest

from tidings.ledger import LedgerError
from tidings.log.memory import MemoryLedger


def _max(held: bytes | None, written: bytes | None) -> bytes | None:
    if held is None or written is None:
        return written if held is None else held
    return max(held, written, key=int)


async def test_a_write_is_applied_and_reported() -> None:
    ledger = MemoryLedger()
    seen: list[tuple[str, str, bytes | None]] = []
    ledger.on_change(lambda *change: seen.append(change))
    await ledger.start()
    assert ledger.ready
    await ledger.put("push", "a", b"1")
    await ledger.put("push", "a", b"1")  # the same value again changes nothing
    await ledger.put("push", "b", b"2")
    await ledger.put("push", "a", None)
    assert ledger.get("push", "a") is None
    assert list(ledger.items("push")) == [("b", b"2")]
    assert ledger.count("push") == 1 and ledger.count("read") == 0
    assert seen == [("push", "a", b"1"), ("push", "b", b"2"), ("push", "a", None)]


async def test_a_merge_decides_what_is_kept() -> None:
    ledger = MemoryLedger()
    ledger.merge("read", _max)
    await ledger.start()
    for value in (b"5", b"3", b"9", b"7"):
        await ledger.put("read", "alice", value)
    assert ledger.get("read", "alice") == b"9"
    await ledger.put("other", "k", b"3")
    await ledger.put("other", "k", b"1")  # no merge: the last write wins
    assert ledger.get("other", "k") == b"1"


def test_the_same_writes_give_the_same_table_on_every_node() -> None:
    writes = [("read", "a", b"4"), ("read", "a", b"2"), ("push", "x", b"p"), ("read", "b", b"1")]
    tables = []
    for _ in range(2):
        ledger = MemoryLedger()
        ledger.merge("read", _max)
        for write in writes:
            ledger.apply(*write)
        tables.append(ledger.snapshot())
    assert tables[0] == tables[1] == {"read": {"a": b"4", "b": b"1"}, "push": {"x": b"p"}}


def test_a_restored_snapshot_reports_only_what_changed() -> None:
    ledger = MemoryLedger()
    ledger.apply("push", "kept", b"1")
    ledger.apply("push", "gone", b"2")
    seen: list[tuple[str, str, bytes | None]] = []
    ledger.on_change(lambda *change: seen.append(change))
    ledger.restore({"push": {"kept": b"1", "new": b"3"}, "read": {}})
    assert sorted(seen, key=str) == sorted([("push", "gone", None), ("push", "new", b"3")], key=str)
    assert ledger.snapshot() == {"push": {"kept": b"1", "new": b"3"}}


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    ledger = MemoryLedger()
    seen: list[str] = []

    def broken(kind: str, key: str, value: bytes | None) -> None:
        raise RuntimeError("reader bug")

    ledger.on_change(broken)
    ledger.on_change(lambda kind, key, value: seen.append(key))
    ledger.apply("push", "a", b"1")
    assert seen == ["a"] and ledger.get("push", "a") == b"1"
    assert "callback failed" in caplog.text


async def test_a_closed_ledger_refuses_writes() -> None:
    ledger = MemoryLedger()
    await ledger.start()
    await ledger.close()
    assert not ledger.ready
    with pytest.raises(LedgerError):
        await ledger.put("push", "a", b"1")
