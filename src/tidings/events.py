"""Events back to the application: their JSON schema, routing keys and the outbox interface.

tidings tells the application what happens on its side (a user came online, a client
subscribed, …) by publishing JSON events to the exchange ``amqp.events_exchange``. This
module is the pure part: what an event looks like and where it is routed; the RabbitMQ
side is :mod:`tidings.log.outbox`.

Every event is one JSON object with at least:

- ``type``: what happened, e.g. ``"user.online"``; the routing key is
  ``<amqp.events_prefix>.<type>`` (``tidings.user.online`` by default);
- ``id``: a string unique to the occurrence. An event sent twice (see the guarantees in
  the README, "Back to your application") carries the same ``id`` both times, so a
  consumer dedupes on it;
- ``node``: the tidings worker where it happened (its cluster id);
- ``time``: Unix time in seconds (a float, millisecond precision) at which tidings saw it.

The fields of each type are in :func:`user_event`, :func:`subscription_event` and
:func:`receipt_event`.

The interface the rest of tidings uses is :class:`Outbox`, one call that never blocks::

    outbox.emit(routing_key, event)   # queued; published later, in order, with confirms

(and :meth:`tidings.node.Node.emit_event`, which adds ``type``/``id``/``node``/``time`` and
the routing key's prefix). :class:`MemoryOutbox` is its in-memory twin for tests and for a
node without RabbitMQ.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = [
    "RECEIPT",
    "SUBSCRIBED",
    "UNSUBSCRIBED",
    "USER_OFFLINE",
    "USER_ONLINE",
    "MemoryOutbox",
    "Outbox",
    "event_id",
    "receipt_event",
    "routing_key",
    "subscription_event",
    "user_event",
]

#: Event types (the routing key is ``<prefix>.<type>``).
USER_ONLINE = "user.online"
USER_OFFLINE = "user.offline"
SUBSCRIBED = "subscription.subscribed"
UNSUBSCRIBED = "subscription.unsubscribed"
RECEIPT = "receipt"


class Outbox(Protocol):
    """Where events for the application go. ``emit`` never blocks and never raises: an
    event that cannot be kept (the buffer is full) is counted and dropped."""

    def emit(self, routing_key: str, event: Mapping[str, Any]) -> None:
        """Queues ``event`` (JSON-serialisable) for ``routing_key``."""

    async def start(self) -> None:
        """Connects (the RabbitMQ outbox) and starts sending."""

    async def close(self) -> None:
        """Sends what is buffered, for a short while at most, and disconnects."""


def routing_key(prefix: str, kind: str) -> str:
    """``<prefix>.<kind>`` (just ``kind`` when the prefix is empty)."""
    return f"{prefix}.{kind}" if prefix else kind


def event_id(*parts: str) -> str:
    """A short, stable id made from ``parts``: the same parts always give the same id, so
    that two workers reporting one occurrence give it one id."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12)
    return digest.hexdigest()


def user_event(
    kind: str, *, id: str, user: str, node: str, time: float, reason: str = ""
) -> dict[str, Any]:
    """A ``user.online`` or ``user.offline`` event.

    Args:
        kind: :data:`USER_ONLINE` or :data:`USER_OFFLINE`.
        id: the transition's id (the same on every worker that saw it).
        user: the user (the connection token's ``sub``).
        node: the worker whose connection made the transition (the first one opened,
            the last one closed, or the worker that went silent).
        time: when the emitting worker saw it.
        reason: for ``user.offline``: ``"disconnect"`` (the last connection closed) or
            ``"expired"`` (its worker stopped answering for ``cluster.presence_ttl``).
    """
    event: dict[str, Any] = {
        "type": kind,
        "id": id,
        "user": user,
        "node": node,
        "time": round(time, 3),
    }
    if reason:
        event["reason"] = reason
    return event


def subscription_event(
    kind: str, *, id: str, user: str, client: str, channel: str, node: str, time: float
) -> dict[str, Any]:
    """A ``subscription.subscribed`` or ``subscription.unsubscribed`` event (namespaces
    with ``lifecycle_events = true``)."""
    return {
        "type": kind,
        "id": id,
        "user": user,
        "client": client,
        "channel": channel,
        "node": node,
        "time": round(time, 3),
    }


def receipt_event(
    *,
    id: str,
    user: str,
    client: str,
    channel: str,
    offsets: list[int],
    upto: int,
    node: str,
    time: float,
) -> dict[str, Any]:
    """A ``receipt`` event: a client marked publications of ``channel`` seen (sent once,
    by the worker that accepted the mark).

    Args:
        offsets: the positions marked seen, ascending (may be empty with ``upto``).
        upto: every position up to it marked seen; 0 when the mark named offsets only.
        client: the client id of the connection that marked; "" over HTTP, which has
            no client.
    """
    return {
        "type": RECEIPT,
        "id": id,
        "user": user,
        "client": client,
        "channel": channel,
        "offsets": offsets,
        "upto": upto,
        "node": node,
        "time": round(time, 3),
    }


class MemoryOutbox:
    """Keeps the last ``size`` events in memory (tests; a node without RabbitMQ).

    Attributes:
        events: ``(routing_key, event)`` pairs, oldest first.
        dropped: events pushed out because ``size`` were already kept.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.events: deque[tuple[str, Mapping[str, Any]]] = deque(maxlen=size)
        self.dropped = 0

    def emit(self, routing_key: str, event: Mapping[str, Any]) -> None:
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
        self.events.append((routing_key, event))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def of_type(self, kind: str) -> list[Mapping[str, Any]]:
        """The kept events of type ``kind``, oldest first."""
        return [e for _, e in self.events if e.get("type") == kind]
