"""Reports: the events a node sends the application through its outbox.

Any event (:meth:`Reports.emit`), the subscriptions of ``lifecycle_events`` namespaces
(subscribed, unsubscribed: where they happen), and users online and offline, which this
worker emits only while the election makes it the leader (:mod:`tidings.lifecycle`).
Nothing is sent when no events exchange is set; nothing here blocks (:mod:`tidings.events`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from tidings.clientinfo import ClientInfo
from tidings.events import (
    USER_OFFLINE,
    USER_ONLINE,
    Outbox,
    event_id,
    routing_key,
    subscription_event,
    user_event,
)
from tidings.lifecycle import Lifecycle, elect
from tidings.metrics import Metrics
from tidings.presence import Presence

__all__ = ["Reports"]


class Reports:
    """This worker's events for the application.

    Args:
        outbox: where the events go (``amqp.events_exchange``); None sends nothing.
        prefix: ``amqp.events_prefix``, the first word of every routing key.
        worker: this worker's id, the events' ``node``.
        view: the cluster's presence, whose user changes are reported.
        lifecycle: who reports those changes (the election's state).
        clock: wall time, the events' ``time``.
        monotonic: the presence view's clock.
    """

    def __init__(
        self,
        outbox: Outbox | None,
        prefix: str,
        worker: str,
        view: Presence,
        lifecycle: Lifecycle,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.outbox = outbox
        self._prefix = prefix
        self._worker = worker
        self._view = view
        self.lifecycle = lifecycle
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic

    def emit(self, kind: str, fields: Mapping[str, Any], id: str = "") -> None:
        """Sends an event of type ``kind``, routed ``<prefix>.<kind>``, with ``fields``
        beside ``type``, ``id`` (``id``, or a new random one), ``node`` and ``time``."""
        if self.outbox is None:
            return
        event = {"type": kind, "id": "", **fields}
        # The envelope wins over fields of the same name.
        event.update(type=kind, id=id or uuid.uuid4().hex[:24])
        event.update(node=self._worker, time=round(self._clock(), 3))
        self.outbox.emit(routing_key(self._prefix, kind), event)

    def subscription(self, kind: str, channel: str, info: ClientInfo) -> None:
        """A local subscriber of ``channel`` came (``subscribed``) or went."""
        if self.outbox is None:
            return
        event = subscription_event(
            kind,
            id=uuid.uuid4().hex[:24],
            user=info.user,
            client=info.client,
            channel=channel,
            node=self._worker,
            time=self._clock(),
        )
        self.outbox.emit(routing_key(self._prefix, kind), event)

    def users(self) -> None:
        """Hands the view's user changes to the election; emits what this worker owes."""
        view, now = self._view, self._monotonic()
        due = self.lifecycle.step(
            view.user_changes(), elect(view.electors(now)), now, self._clock()
        )
        self._metrics.lifecycle_leader.set(1 if self.lifecycle.leading else 0)
        if self.outbox is None:
            return
        for item in due:
            change = item.change
            kind = USER_ONLINE if change.kind == "online" else USER_OFFLINE
            event = user_event(
                kind,
                id=event_id(kind, change.user, change.worker, str(change.since)),
                user=change.user,
                node=change.worker,
                time=item.time,
                reason=change.reason,
            )
            self.outbox.emit(routing_key(self._prefix, kind), event)
