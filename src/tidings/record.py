"""A record: one event as the log delivers it to the node, and the router reads it.

It sits below both the log, which makes records, and the router, which reads them, so
that neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Record"]


@dataclass(frozen=True, slots=True)
class Record:
    """One event as the log delivers it.

    Attributes:
        position: the log offset, starting at 1 (the SDKs treat 0 as "no position");
            strictly increasing, not contiguous per channel.
        routing_key: the AMQP routing key the event was published with.
        headers: AMQP headers, values as the broker decoded them.
        body: the raw message body.
        timestamp: seconds since the Unix epoch when the log took the event.
    """

    position: int
    routing_key: str
    body: bytes
    timestamp: float
    headers: Mapping[str, object] = field(default_factory=dict)
