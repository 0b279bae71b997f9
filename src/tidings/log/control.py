"""Control messages: what tidings itself writes into a stream, beside the events.

A RabbitMQ stream has no identity that AMQP 0-9-1 shows: deleted and declared again under
the same name, it restarts its offsets at 0 and nothing says it is another log. tidings
therefore writes its own small *control messages* into the stream, published to the
stream queue directly (default exchange, routing key = the stream's name) so that they
never pass through the application's exchange:

- a **beacon** names the epoch of the stream it sits in, and carries ``seen``: the last
  offset its publisher had read from that stream (how beacons decide the epoch is
  :mod:`tidings.log.epoch`);
- a **marker** is a unique id a node writes so that it knows when its reading has reached
  the tail ("everything that was in the stream before my marker has been read").

Other consumers of the stream (not tidings) see these messages; they are small and carry
the header ``x-tidings-control``. This module is pure: the headers that carry each one,
and :func:`parse_control` to tell them from events.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CONTROL_HEADER",
    "Beacon",
    "Control",
    "Marker",
    "UnknownControl",
    "parse_control",
]

CONTROL_HEADER = "x-tidings-control"
EPOCH_HEADER = "x-tidings-epoch"
SEEN_HEADER = "x-tidings-seen"
MARKER_HEADER = "x-tidings-marker"


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
