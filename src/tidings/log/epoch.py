"""Control messages tidings keeps in a stream, and how an epoch is read from them.

A RabbitMQ stream has no identity that AMQP 0-9-1 shows: deleted and declared again under
the same name, it restarts its offsets at 0 and nothing says it is another log. tidings
therefore writes its own small *control messages* into the stream, published to the
stream queue directly (default exchange, routing key = the stream's name) so that they
never pass through the application's exchange:

- a **beacon** names the epoch of the stream it sits in, and carries ``seen``: the last
  offset its publisher had read from that stream;
- a **marker** is a unique id a node writes so that it knows when its reading has reached
  the tail ("everything that was in the stream before my marker has been read").

The rules (the I/O lives in :mod:`tidings.log.rabbitmq`; this module is pure):

1. The epoch of a stream is the one carried by its beacons; they all carry the same value,
   because a node that writes a beacon copies the epoch it read from the stream, and only
   a node that found no beacon at all *mints* a new epoch (under a broker-side lock, so two
   nodes starting on a fresh stream never mint two epochs).
2. A beacon whose ``seen`` is not below its own position cannot have been written by a
   reader of *this* stream (a reader of this stream has read only offsets below the one
   its beacon gets): it comes from a node still reading an earlier incarnation, and is
   ignored.
3. To learn the epoch, a node reads from a recent point in time up to a marker it has
   just written and takes the first usable beacon (:class:`BeaconScan`); the warm-up read
   at start-up serves as that read when its window is long enough. Beacons are refreshed
   while nodes run, so a recent span normally holds one; when it does not, the scan is
   repeated from the stream's first message.

Rule 2 leaves one gap: a node that misses a deletion for the few milliseconds before its
consumer is cancelled could write a beacon of the old epoch into the new stream with a
``seen`` below the beacon's offset only if the new stream had already grown past that
node's offset, which it cannot have in milliseconds.

Other consumers of the stream (not tidings) see these messages; they are small and carry
the header ``x-tidings-control``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CONTROL_HEADER",
    "Beacon",
    "BeaconScan",
    "Control",
    "Marker",
    "ScanResult",
    "UnknownControl",
    "new_epoch",
    "parse_control",
]

CONTROL_HEADER = "x-tidings-control"
EPOCH_HEADER = "x-tidings-epoch"
SEEN_HEADER = "x-tidings-seen"
MARKER_HEADER = "x-tidings-marker"


def new_epoch() -> str:
    """A fresh epoch name (12 hex digits, the same shape as the memory log's)."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True)
class Beacon:
    """Names the epoch of the stream it is written to.

    Attributes:
        epoch: the epoch name.
        seen: the last stream offset the publisher had read, -1 when none.
    """

    epoch: str
    seen: int

    def headers(self) -> dict[str, object]:
        """The AMQP headers that carry this beacon."""
        return {CONTROL_HEADER: "beacon", EPOCH_HEADER: self.epoch, SEEN_HEADER: self.seen}

    def is_stale(self, offset: int) -> bool:
        """Whether a beacon read at ``offset`` was written by a reader of another stream."""
        return self.seen >= offset


@dataclass(frozen=True, slots=True)
class Marker:
    """A unique point a node writes to learn when its reading reached the tail."""

    id: str

    @classmethod
    def new(cls) -> Marker:
        """A marker with a fresh random id."""
        return cls(uuid.uuid4().hex)

    def headers(self) -> dict[str, object]:
        """The AMQP headers that carry this marker."""
        return {CONTROL_HEADER: "marker", MARKER_HEADER: self.id}


@dataclass(frozen=True, slots=True)
class UnknownControl:
    """A control message this version does not know (or a malformed one): skipped."""

    kind: str


Control = Beacon | Marker | UnknownControl


def parse_control(
    exchange: str, routing_key: str, stream: str, headers: Mapping[str, object]
) -> Control | None:
    """Reads a stream message as a control message, or returns None for an event.

    Only messages published to the stream queue itself (default exchange, routing key =
    ``stream``) count: an application publishing through its exchange cannot forge one, a
    header ``x-tidings-control`` on its event leaves it an ordinary event.
    """
    kind = headers.get(CONTROL_HEADER)
    if kind is None or exchange != "" or routing_key != stream:
        return None
    if isinstance(kind, bytes):
        kind = kind.decode("utf-8", "replace")
    if kind == "beacon":
        epoch, seen = headers.get(EPOCH_HEADER), headers.get(SEEN_HEADER)
        if isinstance(epoch, bytes):
            epoch = epoch.decode("utf-8", "replace")
        if isinstance(epoch, str) and epoch and type(seen) is int:
            return Beacon(epoch, seen)
    elif kind == "marker":
        marker = headers.get(MARKER_HEADER)
        if isinstance(marker, bytes):
            marker = marker.decode("utf-8", "replace")
        if isinstance(marker, str) and marker:
            return Marker(marker)
    return UnknownControl(str(kind))


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
