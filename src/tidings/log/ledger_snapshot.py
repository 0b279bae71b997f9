"""Writing the ledger's snapshots, which keep its stream's retention from losing the table.

The stream keeps ``ledger.max_bytes`` (its ``x-max-length-bytes``, in segments of a
sixteenth of it, so the retention acts in steps of that size). When the writes read
since the last snapshot began pass a quarter of ``max_bytes``, a ledger (after a random
pause of up to ``snapshot_jitter`` seconds, so that usually one does, if sometimes two)
writes a snapshot: the whole table, in parts of :data:`PART_BYTES`, with the offset of
the last record it reflects. A replay from wherever the stream now starts is then exact
(:mod:`tidings.log.ledger_replay`): it keeps the writes it reads until it has read a
whole snapshot reflecting at least the record before the first one read, restores it and
applies the kept writes after the offset it reflects. The last whole snapshot and what
follows it take at most a quarter (the writes between snapshots) plus two eighths (two
snapshots of a full table), so the retention never drops a snapshot still needed, with
room for lag and per-message overhead.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from typing import Protocol

from tidings.config import LedgerSettings
from tidings.ledger import LedgerError
from tidings.log.ledger_link import StreamLink
from tidings.log.ledger_replay import Replay
from tidings.log.ledger_wire import encode, split_snapshot
from tidings.metrics import Metrics

__all__ = ["PART_BYTES", "SnapshotWriter", "Snapshotted"]

# The ledger's rooms log as one.
log = logging.getLogger("tidings.log.ledger")

#: Entries' bytes per snapshot message (well under RabbitMQ's message size limit).
PART_BYTES = 256 * 1024


class Snapshotted(Protocol):
    """The ledger as its snapshot writer sees it."""

    @property
    def ready(self) -> bool:
        """True while attached, caught up with the stream and exact."""

    @property
    def table_bytes(self) -> int:
        """Bytes the table takes in a snapshot."""

    def snapshot(self) -> dict[str, dict[str, bytes]]:
        """A copy of the whole table."""


class SnapshotWriter:
    """Writes a snapshot of the ledger's table once enough was written since the last.

    Args:
        ledger: the table written.
        settings: the ``[ledger]`` settings (``max_bytes``).
        replay: the bytes written since the last snapshot, and the offset read last.
        link: the channel the parts are published on, and the task that writes them.
        metrics: where snapshots are counted.
        timeout: seconds each part waits for its confirm.
        jitter: longest pause before writing a snapshot that is due.
        part_bytes: entries' bytes per snapshot message.
    """

    def __init__(
        self,
        ledger: Snapshotted,
        settings: LedgerSettings,
        *,
        replay: Replay,
        link: StreamLink,
        metrics: Metrics,
        timeout: float,
        jitter: float,
        part_bytes: int,
    ) -> None:
        self._ledger = ledger
        self._every = settings.max_bytes // 4
        self._replay = replay
        self._link = link
        self._metrics = metrics
        self._timeout = timeout
        self._jitter = jitter
        self._part_bytes = part_bytes
        self._writing = False

    def write_if_due(self) -> None:
        """Starts writing a snapshot if one is due, none is being written and the ledger
        is ready (called after each record read)."""
        if self._writing or self._replay.since_snapshot < self._every:
            return
        if not self._ledger.ready:
            return
        self._writing = True
        self._link.spawn(self._write())

    async def _write(self) -> None:
        try:
            await asyncio.sleep(random.uniform(0, self._jitter))
            raw = self._link.raw
            # Another ledger's snapshot began meanwhile (the count starts over), or the
            # broker went away: nothing to do now.
            if raw is None or not self._ledger.ready or self._replay.since_snapshot < self._every:
                return
            assert self._replay.next is not None
            # Table and offset together, before any await: the parts reflect exactly it.
            parts = split_snapshot(
                self._ledger.snapshot(), self._replay.next - 1, uuid.uuid4().bytes, self._part_bytes
            )
            self._replay.since_snapshot = 0
            for part in parts:
                async with asyncio.timeout(self._timeout):
                    await self._link.publish(raw, encode(part))
            self._metrics.ledger_snapshots.inc()
            log.info(
                "ledger: wrote a snapshot of %d bytes in %d parts to %r",
                self._ledger.table_bytes,
                len(parts),
                self._link.stream,
            )
        except (LedgerError, TimeoutError) as exc:
            # Due again at the next record read: the count goes on from the threshold.
            self._replay.since_snapshot = max(self._replay.since_snapshot, self._every)
            log.warning("ledger: the snapshot failed (%s); trying again", exc)
        finally:
            self._writing = False
