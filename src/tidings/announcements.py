"""Announcements: this worker's subscribers and users, told to the cluster and to clients.

A local subscription of a namespace with presence or join/leave enters the cluster's
presence view (:mod:`tidings.presence`) and is announced to the other workers; its join or
leave is pushed to the local subscribers that get them, after the current command's
replies (a joiner's own subscribe reply must come first). The changes other workers send,
and those their silence implies, are pushed the same way. Users arriving and departing go
into the view and to the other workers; the user changes and the subscriptions of
``lifecycle_events`` namespaces go to :class:`~tidings.reports.Reports`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from tidings.clientinfo import ClientInfo
from tidings.config import ChannelOptions
from tidings.control_messages import ControlMessage
from tidings.events import SUBSCRIBED, UNSUBSCRIBED
from tidings.metrics import Metrics
from tidings.presence import Change, Presence
from tidings.publication import ChannelEvent
from tidings.reports import Reports
from tidings.subscription import Subscriber

__all__ = ["Announcements", "Announcer"]


class Announcer(Protocol):
    """What tells the other workers of this worker's changes (the control plane)."""

    def announce(self, kind: str, channel: str, info: ClientInfo) -> None:
        """Sends a local ``join`` or ``leave`` to every other worker; never blocks."""

    def announce_user(self, kind: str, user: str, since: int) -> None:
        """Sends a local user ``online`` or ``offline`` to every other worker; never blocks."""


class Announcements:
    """The local subscriptions in presence and who hears of their joins and leaves.

    Args:
        view: the cluster's presence, this worker's part of which is kept here.
        control: the other workers' way in; None for a worker alone.
        reports: the application's events (subscriptions, users online and offline).
        options: a channel's namespace options, None for an unknown one.
        metrics: where the pushed joins and leaves are counted.
        monotonic: the view's clock.
    """

    def __init__(
        self,
        view: Presence,
        control: Announcer | None,
        reports: Reports,
        options: Callable[[str], ChannelOptions | None],
        metrics: Metrics,
        monotonic: Callable[[], float],
    ) -> None:
        self._view = view
        self._control = control
        self._reports = reports
        self._options = options
        self._metrics = metrics
        self._monotonic = monotonic
        # Local subscriptions reported to the application (lifecycle_events namespaces).
        self._reported: dict[str, dict[Subscriber, ClientInfo]] = {}
        # Local subscriptions entered into presence, and those that get join/leave pushes.
        self._tracked: dict[str, dict[Subscriber, ClientInfo]] = {}
        self._listeners: dict[str, dict[Subscriber, None]] = {}
        self._local_changes: list[Change] = []

    def track(self, sub: Subscriber, channel: str, info: ClientInfo, push_join_leave: bool) -> None:
        """``sub`` subscribed to ``channel`` as ``info``; ``push_join_leave``: it gets the
        channel's joins and leaves (when its namespace has them)."""
        options = self._options(channel)
        if options is None:
            return
        if options.lifecycle_events:
            self._reported.setdefault(channel, {})[sub] = info
            self._reports.subscription(SUBSCRIBED, channel, info)
        if not (options.presence or options.join_leave):
            return
        self._tracked.setdefault(channel, {})[sub] = info
        if push_join_leave and options.join_leave:
            self._listeners.setdefault(channel, {})[sub] = None
        if self._view.add_local(channel, info):
            self._announce(Change("join", channel, info))

    def untrack(self, sub: Subscriber, channel: str) -> None:
        """``sub`` left ``channel`` (nothing when it was not tracked)."""
        reported = self._reported.get(channel)
        if reported is not None:
            gone = reported.pop(sub, None)
            if not reported:
                del self._reported[channel]
            if gone is not None:
                self._reports.subscription(UNSUBSCRIBED, channel, gone)
        tracked = self._tracked.get(channel)
        info = tracked.pop(sub, None) if tracked is not None else None
        if info is None:
            return
        if not tracked:
            del self._tracked[channel]
        listeners = self._listeners.get(channel)
        if listeners is not None:
            listeners.pop(sub, None)
            if not listeners:
                del self._listeners[channel]
        if self._view.remove_local(channel, info.client) is not None:
            self._announce(Change("leave", channel, info))

    def user_arrived(self, user: str) -> None:
        """``user``'s first session on this worker."""
        since = self._view.add_local_user(user)
        if since and self._control is not None:
            self._control.announce_user("online", user, since)
        self._reports.users()

    def user_departed(self, user: str) -> None:
        """``user``'s last session on this worker has gone."""
        since = self._view.remove_local_user(user)
        if since and self._control is not None:
            self._control.announce_user("offline", user, since)
        self._reports.users()

    def on_control(self, message: ControlMessage) -> None:
        """A message of another worker: merged into the view, its changes pushed."""
        self._push_changes(self._view.apply(message, self._monotonic()))
        self._reports.users()

    def expire(self) -> None:
        """Forgets the workers silent for the TTL: their clients leave."""
        self._push_changes(self._view.expire(self._monotonic()))
        self._reports.users()

    def _announce(self, change: Change) -> None:
        """A local join or leave: to the other workers now, to local subscribers after the
        current command's replies (a joiner's own subscribe reply must come first)."""
        if self._control is not None:
            self._control.announce(change.kind, change.channel, change.info)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous test): nothing to wait for
            self._push_changes([change])
            return
        if not self._local_changes:
            loop.call_soon(self._push_local_changes)
        self._local_changes.append(change)

    def _push_local_changes(self) -> None:
        changes, self._local_changes = self._local_changes, []
        self._push_changes(changes)

    def _push_changes(self, changes: Sequence[Change]) -> None:
        """Pushes ``join``/``leave`` to the local subscribers that get them."""
        for change in changes:
            listeners = self._listeners.get(change.channel)
            if not listeners:
                continue
            options = self._options(change.channel)
            if options is None or not options.join_leave:
                continue
            body = b'{"info":%b}' % change.info.to_json()
            event = ChannelEvent(change.channel, change.kind, body)
            for sub in listeners:
                sub.deliver_event(event)
            self._metrics.pushes.inc(len(listeners))
