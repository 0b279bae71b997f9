"""Rebuilding the ledger's table from what its stream still holds: a sans-I/O replay.

:class:`Replay` is fed the stream's records in offset order (``feed``) and applies them to
a :class:`~tidings.ledger.Ledger`. Offsets are the stream's: increasing from 0, not
always by one (RabbitMQ gives an offset to chunks of its own, at a new segment, that no
consumer sees), and the stream's retention removes whole segments from its head.

*Exact from anywhere.* Read from offset 0, every write is applied in order, starting from
the empty table, and the table is exact: this is *live*. Read from a later first offset
``F`` (the head was dropped, or, after a reconnect, records not read yet were:
:meth:`Replay.lost`), the writes before ``F`` are
unknown, so the replay *seeks*: it applies nothing, keeps every write from ``F`` on, with
its offset, and gathers snapshot parts, until it holds every part of a snapshot whose
``reflects`` is at least ``F - 1`` (a snapshot is the table once the records up to offset
``reflects`` were applied, written later at offsets past it, so writes between the two
exist in the stream; ``F - 1`` rather than the offset of the last record dropped, which
is not known: a snapshot reflecting an offset RabbitMQ kept for itself is passed over,
the next one is used). It then restores that snapshot, applies the kept writes with
offsets past ``reflects`` in order, drops the others (the snapshot holds them) and is
live. Every write is so applied exactly once, in stream order, whatever the merges: a
merge that is not idempotent (a counter) is as exact as one that is. A snapshot whose
``reflects`` is before ``F - 1`` misses writes that are gone: it is not used.

A replay that reaches the end of the stream still seeking (no usable snapshot: the
retention was lowered under it, or snapshots failed) cannot be exact; :meth:`settle`
then takes the best it has (the latest whole snapshot, or the table as it is, and the
kept writes after it) and says how far back writes may be missing.

Records already read (an offset below the next expected, after a reconnect) are skipped:
nothing is applied twice. ``since_snapshot`` counts the bytes written since the last
snapshot began, for the writer of the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from tidings.ledger import Ledger
from tidings.log.ledger_wire import Mark, Record, SnapshotPart, Write

__all__ = ["Replay"]

log = logging.getLogger(__name__)


@dataclass
class _Gathering:
    """The parts of one snapshot read so far."""

    reflects: int
    count: int
    parts: dict[int, SnapshotPart] = field(default_factory=dict)

    def table(self) -> dict[str, dict[str, bytes]]:
        table: dict[str, dict[str, bytes]] = {}
        for index in range(self.count):
            for kind, key, value in self.parts[index].entries:
                table.setdefault(kind, {})[key] = value
        return table


class Replay:
    """Applies the stream's records, read in offset order, to ``ledger`` (see the module).

    Args:
        ledger: the table to apply to.
        on_record: called with every write and mark read and applied (or covered by the
            snapshot restored), in stream order: how a writer learns its own came back.
    """

    def __init__(self, ledger: Ledger, on_record: Callable[[Write | Mark], None]) -> None:
        self._ledger = ledger
        self._on_record = on_record
        #: The offset of the next record expected; None before the first.
        self.next: int | None = None
        self.live = False
        #: Bytes of writes and marks read since the last snapshot began (its first part).
        self.since_snapshot = 0
        self._first = 0
        self._kept: list[tuple[int, Write | Mark]] = []
        self._gathering: dict[bytes, _Gathering] = {}
        self._latest: _Gathering | None = None

    @property
    def kept(self) -> int:
        """Records kept while seeking."""
        return len(self._kept)

    def feed(self, offset: int, record: Record | None, size: int) -> None:
        """Takes the record at ``offset`` (``size`` bytes in the stream); None for one
        that could not be decoded, which only takes its offset."""
        if self.next is not None and offset < self.next:
            return  # read before a reconnect: already applied
        if self.next is None:
            self._seek(offset)
        self.next = offset + 1
        if record is None:
            return
        if isinstance(record, SnapshotPart):
            if record.index == 0:
                self.since_snapshot = 0
            if not self.live:
                self._gather(offset, record)
            return
        self.since_snapshot += size
        if self.live:
            self._apply(record)
        else:
            self._kept.append((offset, record))

    def lost(self, first: int) -> None:
        """Records from :attr:`next` to before ``first`` were dropped unread (the stream's
        retention, while away): seeks a snapshot from ``first`` on, as at a first read
        from there."""
        self._seek(first)

    def settle(self) -> int:
        """Goes live with the best table it can: the latest whole snapshot (if any) and
        the writes kept after it. Returns the first offset read: writes before it that no
        snapshot covers are missing. A live replay returns -1 and changes nothing."""
        if self.live:
            return -1
        latest = self._latest
        if latest is not None:
            self._ledger.restore(latest.table())
        self._go_live(latest.reflects if latest is not None else -1)
        return self._first

    def _seek(self, first: int) -> None:
        self._first = first
        self._kept = []
        self._gathering = {}
        self._latest = None
        # From offset 0 the empty table is exact: every write ever made follows.
        self.live = first == 0 and self.next is None
        if not self.live:
            log.info("ledger: reading from offset %d: seeking a snapshot", first)

    def _gather(self, offset: int, part: SnapshotPart) -> None:
        gathering = self._gathering.get(part.snapshot)
        if gathering is None:
            if part.index != 0:
                return  # its first part came before what was read: it cannot be whole
            gathering = self._gathering[part.snapshot] = _Gathering(part.reflects, part.count)
        gathering.parts[part.index] = part
        if len(gathering.parts) < gathering.count:
            return
        del self._gathering[part.snapshot]
        if gathering.reflects < self._first - 1:
            self._latest = gathering  # writes between it and the first read are gone
            return
        self._ledger.restore(gathering.table())
        self._go_live(gathering.reflects)
        log.info("ledger: restored the snapshot of offset %d", gathering.reflects)

    def _go_live(self, reflects: int) -> None:
        kept, self._kept = self._kept, []
        self._gathering = {}
        self._latest = None
        self.live = True
        for offset, record in kept:
            if offset > reflects:
                self._apply(record)
            else:
                self._on_record(record)  # in the snapshot already

    def _apply(self, record: Write | Mark) -> None:
        if isinstance(record, Write):
            self._ledger.apply(record.kind, record.key, record.value)
        self._on_record(record)
