"""The ledger's records as bytes: each kind round-trips, torn bodies are refused, and a
table splits into snapshot parts of bounded size that hold it whole."""

from __future__ import annotations

import pytest

from tidings.log.ledger_wire import (
    Mark,
    SnapshotPart,
    Write,
    decode,
    encode,
    entry_size,
    split_snapshot,
)

WRITER = bytes(range(16))


@pytest.mark.parametrize(
    "record",
    [
        Write(WRITER, 1, "push", "alice/é", b"\x00value\xff"),
        Write(WRITER, 2**64 - 1, "read", "k", None),
        Write(WRITER, 3, "read", "", b""),
        Mark(WRITER, 7),
        SnapshotPart(WRITER, 0, 1, -1, ()),
        SnapshotPart(WRITER, 2, 3, 12345, (("push", "a", b"1"), ("read", "b", b""))),
    ],
)
def test_every_record_round_trips(record: Write | Mark | SnapshotPart) -> None:
    assert decode(encode(record)) == record


def test_a_delete_and_an_empty_value_differ() -> None:
    deleted, empty = Write(WRITER, 1, "k", "x", None), Write(WRITER, 1, "k", "x", b"")
    assert encode(deleted) != encode(empty)
    assert decode(encode(deleted)).value is None  # type: ignore[union-attr]
    assert decode(encode(empty)).value == b""  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"X" + bytes(24),
        b"M" + bytes(23),
        b"M" + bytes(25),
        encode(Write(WRITER, 1, "push", "key", b"value"))[:-1],
        encode(Write(WRITER, 1, "push", "key", b"value")) + b"!",
        encode(SnapshotPart(WRITER, 0, 1, 5, (("push", "a", b"1"),)))[:-1],
        b"S" + WRITER + (3).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(8),
        b"W" + WRITER + bytes(8) + b"\x02\xff\xfe" + bytes(6),
    ],
)
def test_torn_or_unknown_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode(body)


def test_a_table_splits_into_bounded_parts_that_hold_it_whole() -> None:
    table = {
        "push": {f"user{i}": bytes([i]) * 40 for i in range(50)},
        "read": {f"r{i}": b"%d" % i for i in range(30)},
    }
    parts = split_snapshot(table, 99, WRITER, part_bytes=300)
    assert len(parts) > 5
    assert [p.index for p in parts] == list(range(len(parts)))
    assert {(p.count, p.reflects, p.snapshot) for p in parts} == {(len(parts), 99, WRITER)}
    for part in parts:
        sizes = [entry_size(*entry) for entry in part.entries]
        assert part.entries and (sum(sizes) <= 300 or len(sizes) == 1)
    rebuilt: dict[str, dict[str, bytes]] = {}
    for part in parts:
        for kind, key, value in decode(encode(part)).entries:  # type: ignore[union-attr]
            rebuilt.setdefault(kind, {})[key] = value
    assert rebuilt == table


def test_an_empty_table_is_one_empty_part() -> None:
    assert split_snapshot({}, -1, WRITER, 1000) == [SnapshotPart(WRITER, 0, 1, -1, ())]


def test_an_entry_larger_than_a_part_has_a_part_of_its_own() -> None:
    table = {"k": {"a": b"x" * 500, "b": b"y", "c": b"z" * 500}}
    parts = split_snapshot(table, 0, WRITER, part_bytes=100)
    assert [[key for _, key, _ in p.entries] for p in parts] == [["a"], ["b"], ["c"]]
