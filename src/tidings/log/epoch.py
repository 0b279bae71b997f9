"""The stream's epoch: the name of its incarnation, read from the beacons it holds.

The rules (:class:`BeaconScan` is their pure part, :class:`EpochKeeper` their I/O):

1. The epoch of a stream is the one carried by its beacons (:mod:`tidings.log.control`);
   they all carry the same value, because a node that writes a beacon copies the epoch it
   read from the stream, and only a node that found no beacon at all *mints* a new epoch,
   under a broker-side lock (the exclusive queue ``<stream>.epoch-lock``): it takes the
   lock, scans the recent span once more and only then mints, so that nodes starting
   together on a fresh stream agree.
2. A beacon whose ``seen`` is not below its own position cannot have been written by a
   reader of *this* stream (a reader of this stream has read only offsets below the one
   its beacon gets): it comes from a node still reading an earlier incarnation, and is
   ignored.
3. To learn the epoch, a node reads from a recent point in time up to a marker it has
   just written and takes the first usable beacon. At start-up the warm-up read itself
   meets one: every node writes a beacon when it has not read one for ``beacon_interval``
   (jittered), so a running cluster adds about one tiny message per interval, and the
   warm window (the longest history TTL) is normally longer than ``3 x beacon_interval``;
   with a shorter window that span is scanned separately. When it holds none, the scan is
   repeated from the stream's first message. Only when no beacon is left (no node ran for
   longer than the retention) does the epoch change without the stream changing: clients
   are then told their recovery failed, true by then anyway.

Rule 2 leaves one gap: a node that misses a deletion for the few milliseconds before its
consumer is cancelled could write a beacon of the old epoch into the new stream with a
``seen`` below the beacon's offset only if the new stream had already grown past that
node's offset, which it cannot have in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel

from tidings.log.broker import StreamLost, describe
from tidings.log.control import Beacon, Control, Marker
from tidings.log.message import control_of
from tidings.log.probe import StreamReader

__all__ = ["SCAN_INTERVALS", "BeaconScan", "EpochKeeper", "ScanResult", "new_epoch"]

#: The epoch scan covers this many beacon intervals: while any node runs, beacons are
#: written at most about 1.6 intervals apart, so three leave room for lag and jitter.
SCAN_INTERVALS = 3


def new_epoch() -> str:
    """A fresh epoch name (12 hex digits, the same shape as the memory log's)."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True)
class ScanResult:
    """How a scan ended.

    Attributes:
        beacon: the first usable beacon, or None when the marker came first.
        position: the offset where the scan stopped (the beacon's or the marker's).
    """

    beacon: Beacon | None
    position: int


class BeaconScan:
    """Reads a stream from some point until a usable beacon or the given marker.

    Feed every message in offset order; :meth:`feed` returns the result once known.

    Args:
        marker_id: the marker written just before the scan started reading; it bounds
            the scan to what the stream held at that moment.
        distrust: an epoch known not to belong to this stream (its offsets went
            backwards under a node of that epoch); its beacons are skipped.
    """

    def __init__(self, marker_id: str, distrust: str | None = None) -> None:
        self._marker_id = marker_id
        self._distrust = distrust
        #: Beacons skipped as stale or distrusted, for the log.
        self.skipped = 0

    def feed(self, position: int, control: Control | None) -> ScanResult | None:
        """Takes the message at offset ``position``; returns the result once the scan is
        over."""
        if isinstance(control, Beacon):
            if control.is_stale(position) or control.epoch == self._distrust:
                self.skipped += 1
                return None
            return ScanResult(control, position)
        if isinstance(control, Marker) and control.id == self._marker_id:
            return ScanResult(None, position)
        return None


class EpochKeeper:
    """Learns the epoch of the stream a node reads, mints it when there is none, and
    writes the beacons and markers that let every node find it.

    Args:
        reader: short reads of the stream, and the lock.
        publish: the robust channel (with publisher confirms) control messages go out on.
        stream: the stream queue's name.
        clock: wall-clock seconds; stamps control messages and times beacons.
        beacon_interval: seconds between beacons.
        timeout: seconds to wait for a publish confirmation.
        logger: where to log.

    Attributes:
        epoch: the stream's epoch; None until learnt.
    """

    def __init__(
        self,
        reader: StreamReader,
        publish: AbstractRobustChannel,
        stream: str,
        *,
        clock: Callable[[], float],
        beacon_interval: float,
        timeout: float,
        logger: logging.Logger,
    ) -> None:
        self._reader = reader
        self._publish_channel = publish
        self._stream = stream
        self._clock = clock
        self._beacon_interval = beacon_interval
        self._timeout = timeout
        self._log = logger
        self.epoch: str | None = None
        self._warm_beacon: str | None = None
        self._last_beacon_at = 0.0
        self._conflicts: set[str] = set()

    async def mark(self) -> Marker:
        """Writes a fresh marker at the stream's tail."""
        marker = Marker.new()
        await self._publish(marker.headers())
        return marker

    def on_beacon(self, position: int, control: Beacon) -> None:
        """Takes a beacon the consumer read at ``position``."""
        if control.is_stale(position):
            self._log.warning(
                "stream %r: beacon at %d comes from a reader of another incarnation",
                self._stream,
                position,
            )
        elif self.epoch is None:
            # Start-up: the first beacon of the warm window names the epoch.
            if self._warm_beacon is None:
                self._warm_beacon = control.epoch
            self._last_beacon_at = self._clock()
        elif control.epoch == self.epoch:
            self._last_beacon_at = self._clock()
        elif control.epoch not in self._conflicts:
            self._conflicts.add(control.epoch)
            self._log.warning(
                "stream %r: beacon at %d names epoch %s, this node keeps %s",
                self._stream,
                position,
                control.epoch,
                self.epoch,
            )

    async def learn(self, marker: Marker, warm_seconds: float) -> None:
        """Sets the epoch, if unknown, from the warm-up's first beacon or by discovery."""
        if self.epoch is not None:
            return
        if self._warm_beacon is not None:
            self.epoch = self._warm_beacon
            return
        # A warm window at least as long as the scan window has been scanned already.
        window = warm_seconds < self._beacon_interval * SCAN_INTERVALS
        self.epoch = await self.discover(marker, None, window=window)

    async def discover(self, marker: Marker, distrust: str | None, window: bool = True) -> str:
        """The epoch of the stream as it is up to ``marker``, minted if it has none.

        Args:
            marker: written to the stream before; bounds every scan.
            distrust: an epoch whose beacons are not this stream's (see BeaconScan).
            window: scan the recent window first (skipped when it was just read).
        """
        result = ScanResult(None, -1)
        if window:
            result = await self._scan(self._scan_window(), marker.id, distrust)
        if result.beacon is None:
            self._log.info(
                "no epoch beacon in the last %s of stream %r; looking from its start",
                self._scan_window(),
                self._stream,
            )
            result = await self._scan("first", marker.id, distrust)
        if result.beacon is not None:
            return result.beacon.epoch
        return await self._mint(distrust)

    async def refresh(self, ready: Callable[[], bool], seen: Callable[[], int]) -> None:
        """Writes a beacon when none was read for a beacon interval, so that one is
        always recent; runs until cancelled. Several nodes may write in the same
        interval: harmless.

        Args:
            ready: whether the log is connected and caught up (else no beacon is written).
            seen: the last offset the node has read.
        """
        while True:
            await asyncio.sleep(self._beacon_interval / 2 * random.uniform(0.8, 1.2))
            if not ready() or self.epoch is None:
                continue
            if self._clock() - self._last_beacon_at < self._beacon_interval:
                continue
            self._last_beacon_at = self._clock()
            try:
                await self._publish(Beacon(self.epoch, seen()).headers())
            except Exception as exc:
                self._log.warning("could not write an epoch beacon: %s", describe(exc))

    async def _mint(self, distrust: str | None) -> str:
        """Mints the stream's epoch, under a lock so that concurrent nodes agree."""
        lock_name = f"{self._stream}.epoch-lock"
        lock = await self._reader.acquire(lock_name)
        try:
            # Another node may have minted while we waited: its beacon is recent.
            marker = Marker.new()
            await self._publish(marker.headers())
            result = await self._scan(self._scan_window(), marker.id, distrust)
            if result.beacon is not None:
                return result.beacon.epoch
            epoch = new_epoch()
            await self._publish(Beacon(epoch, result.position).headers())
            self._log.info("stream %r starts epoch %s", self._stream, epoch)
            return epoch
        finally:
            await self._reader.release(lock, lock_name)

    def _scan_window(self) -> str:
        return f"{math.ceil(self._beacon_interval * SCAN_INTERVALS)}s"

    async def _scan(self, offset: str, marker_id: str, distrust: str | None) -> ScanResult:
        scan = BeaconScan(marker_id, distrust)
        stream = self._stream
        result = await self._reader.read(
            offset,
            lambda position, message: scan.feed(position, control_of(message, stream)),
        )
        if scan.skipped:
            self._log.warning(
                "stream %r: skipped %d beacons of another incarnation", stream, scan.skipped
            )
        return result

    async def _publish(self, headers: dict[str, Any]) -> None:
        """Publishes an empty message with ``headers`` straight into the stream queue.

        Raises:
            StreamLost: the stream queue does not exist (the broker returned it).
        """
        message = aio_pika.Message(
            b"",
            headers=headers,
            timestamp=datetime.fromtimestamp(self._clock(), UTC),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            async with asyncio.timeout(self._timeout):
                await self._publish_channel.default_exchange.publish(
                    message, routing_key=self._stream, mandatory=True
                )
        except aiormq.exceptions.PublishError:
            raise StreamLost(f"stream {self._stream!r} does not exist") from None
