"""The node as a session's commands see it (:class:`CommandHost`, whose calls are all
synchronous) and what it answers a subscription with.

:class:`~tidings.protocol.session.SessionHost` adds admission and release, which take the
session itself. Through these the protocol core reaches the rest of the node, so it stays
free of the hub, the log and sockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from tidings.auth import ConnectionClaims, SubscriptionClaims
from tidings.channels import ChannelName
from tidings.clientinfo import ClientInfo
from tidings.config import ChannelOptions
from tidings.protocol.messages import RecoverPosition
from tidings.subscription import HistoryPage, Recovery, Subscriber

__all__ = ["CommandHost", "SubscribeOutcome"]


@dataclass(frozen=True, slots=True)
class SubscribeOutcome:
    """What the host tells the session after adding a subscription."""

    epoch: str
    #: The node's current position in the log.
    offset: int
    #: Whether the channel keeps history (the client may recover on it later).
    recoverable: bool
    recovery: Recovery | None



class CommandHost(Protocol):
    """The node as a session's commands see it; every call is synchronous."""

    def authenticate(self, token: str) -> ConnectionClaims:
        """Verifies a connection token; raises TokenError."""

    def verify_subscription(
        self, token: str, channel: str, user: str, client: str
    ) -> SubscriptionClaims:
        """Verifies a subscription token; raises TokenError."""

    def channel_options(self, channel: ChannelName) -> ChannelOptions | None:
        """The options of the channel's namespace, None when the namespace is unknown."""

    def anonymous_allowed(self) -> bool:
        """Whether a connection without a token may be accepted."""

    def subscribe(
        self, sub: Subscriber, channel: str, recover: RecoverPosition | None
    ) -> SubscribeOutcome:
        """Adds the subscription (and computes the recovery) atomically."""

    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        """Removes the subscription."""

    def recovers_from_log(self, channel: str, position: RecoverPosition) -> bool:
        """Whether a recovery from ``position`` needs the log itself (the channel's window
        no longer reaches it) and the log can give it: then the session sends a
        :class:`~tidings.protocol.operations.RecoverCall` before subscribing."""

    def read_history(
        self, channel: str, limit: int, since: RecoverPosition | None, reverse: bool
    ) -> HistoryPage | None:
        """A page of the channel's history; None when ``since`` cannot be served."""

    def count_error(self, code: int) -> None:
        """Counts an error reply (metrics); ``code`` may be an application backend's."""

    def proxies(self, event: str, method: str | None = None) -> bool:
        """Whether the application's backend answers ``event``: ``connect`` (connections
        without a token), ``refresh`` (their expiry) or ``rpc`` (any, or of ``method``)."""

    def track(self, sub: Subscriber, channel: str, info: ClientInfo, push_join_leave: bool) -> None:
        """Enters a new subscription into presence and join/leave (where its namespace keeps
        them); ``push_join_leave`` asks for the channel's join/leave pushes. Unsubscribing
        ends both."""

    def presence(self, channel: str) -> Mapping[str, ClientInfo]:
        """The channel's subscribers in the cluster: client id -> info."""
