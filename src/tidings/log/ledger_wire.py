"""The ledger's records in its RabbitMQ stream, and their bytes.

Three records travel in the stream (see :mod:`tidings.log.ledger`):

* :class:`Write`: one ``(kind, key) -> value`` write (None deletes), tagged with the
  writer (an id per ledger instance) and its sequence number, so the writer knows its own
  write when it reads it back;
* :class:`Mark`: a no-op a ledger writes right after attaching, and waits to read back:
  everything written before it has then been read;
* :class:`SnapshotPart`: part ``index`` of ``count`` of a snapshot of the whole table as
  it was once every record up to offset ``reflects`` was applied.

A record is a type byte and fixed-width big-endian fields; strings are UTF-8. Decoding
refuses anything else with :class:`ValueError` (a record of a later version, a torn
body), so a ledger never applies what it did not understand.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_KIND_BYTES",
    "MAX_VALUE_BYTES",
    "Mark",
    "Record",
    "SnapshotPart",
    "Write",
    "decode",
    "encode",
    "entry_size",
    "split_snapshot",
]

#: Longest kind, key and value a write may have, encoded (UTF-8 for kind and key).
MAX_KIND_BYTES = 64
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 64 * 1024

_WRITE, _DELETE, _MARK, _SNAPSHOT = b"W", b"D", b"M", b"S"
_ID = struct.Struct(">16sQ")  # writer (or snapshot) id, sequence number
_PART = struct.Struct(">16sIIq")  # snapshot id, index, count, reflects
_KIND = struct.Struct(">B")
_KEY = struct.Struct(">H")
_VALUE = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Write:
    """A write of ``key`` of ``kind``; ``value`` None deletes it."""

    writer: bytes
    seq: int
    kind: str
    key: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Mark:
    """A no-op record: read back, it tells its writer that it has read all before it."""

    writer: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    """Part ``index`` (from 0) of ``count`` of snapshot ``snapshot``: some of the table's
    entries as they were once the record at offset ``reflects`` was applied (-1: none)."""

    snapshot: bytes
    index: int
    count: int
    reflects: int
    entries: tuple[tuple[str, str, bytes], ...]


Record = Write | Mark | SnapshotPart


def entry_size(kind: str, key: str, value: bytes | None) -> int:
    """Bytes an entry takes in a snapshot part (and, within a few, in a write)."""
    size = _KIND.size + len(kind.encode()) + _KEY.size + len(key.encode())
    return size + _VALUE.size + (len(value) if value is not None else 0)


def encode(record: Record) -> bytes:
    """The bytes of ``record`` (sizes are the caller's to check: see ``MAX_*_BYTES``)."""
    if isinstance(record, Write):
        head = _ID.pack(record.writer, record.seq)
        if record.value is None:
            return _DELETE + head + _name(record.kind, record.key)
        return _WRITE + head + _entry(record.kind, record.key, record.value)
    if isinstance(record, Mark):
        return _MARK + _ID.pack(record.writer, record.seq)
    head = _PART.pack(record.snapshot, record.index, record.count, record.reflects)
    return _SNAPSHOT + head + b"".join(_entry(*entry) for entry in record.entries)


def decode(body: bytes) -> Record:
    """The record ``body`` holds.

    Raises:
        ValueError: ``body`` is no record of this version, or is torn.
    """
    try:
        return _decode(memoryview(body))
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise ValueError(f"torn ledger record: {exc}") from None


def split_snapshot(
    table: dict[str, dict[str, bytes]], reflects: int, snapshot: bytes, part_bytes: int
) -> list[SnapshotPart]:
    """The table as snapshot parts of about ``part_bytes`` each (at least one part, even
    for an empty table: an empty table is a state too)."""
    groups: list[list[tuple[str, str, bytes]]] = [[]]
    size = 0
    for kind, entries in table.items():
        for key, value in entries.items():
            taken = entry_size(kind, key, value)
            if groups[-1] and size + taken > part_bytes:
                groups.append([])
                size = 0
            groups[-1].append((kind, key, value))
            size += taken
    count = len(groups)
    return [
        SnapshotPart(snapshot, index, count, reflects, tuple(group))
        for index, group in enumerate(groups)
    ]


def _name(kind: str, key: str) -> bytes:
    k, n = kind.encode(), key.encode()
    return _KIND.pack(len(k)) + k + _KEY.pack(len(n)) + n


def _entry(kind: str, key: str, value: bytes) -> bytes:
    return _name(kind, key) + _VALUE.pack(len(value)) + value


def _decode(view: memoryview) -> Record:
    tag, rest = bytes(view[:1]), view[1:]
    if tag == _MARK:
        if len(rest) != _ID.size:
            raise ValueError("torn ledger mark")
        return Mark(*_ID.unpack(rest))
    if tag in (_WRITE, _DELETE):
        writer, seq = _ID.unpack_from(rest)
        at = _ID.size
        kind, key, at = _read_name(rest, at)
        value = None
        if tag == _WRITE:
            value, at = _read_value(rest, at)
        if at != len(rest):
            raise ValueError("trailing bytes after a ledger write")
        return Write(writer, seq, kind, key, value)
    if tag == _SNAPSHOT:
        snapshot, index, count, reflects = _PART.unpack_from(rest)
        if not 0 <= index < count:
            raise ValueError(f"snapshot part {index} of {count}")
        entries = tuple(_read_entries(rest, _PART.size))
        return SnapshotPart(snapshot, index, count, reflects, entries)
    raise ValueError(f"unknown ledger record type {tag!r}")


def _read_entries(view: memoryview, at: int) -> Iterable[tuple[str, str, bytes]]:
    while at < len(view):
        kind, key, at = _read_name(view, at)
        value, at = _read_value(view, at)
        yield kind, key, value


def _read_name(view: memoryview, at: int) -> tuple[str, str, int]:
    (size,) = _KIND.unpack_from(view, at)
    at += _KIND.size
    kind = _take(view, at, size).decode()
    at += size
    (size,) = _KEY.unpack_from(view, at)
    at += _KEY.size
    key = _take(view, at, size).decode()
    return kind, key, at + size


def _read_value(view: memoryview, at: int) -> tuple[bytes, int]:
    (size,) = _VALUE.unpack_from(view, at)
    at += _VALUE.size
    return _take(view, at, size), at + size


def _take(view: memoryview, at: int, size: int) -> bytes:
    if at + size > len(view):
        raise ValueError("a ledger record field runs past the body")
    return bytes(view[at : at + size])
