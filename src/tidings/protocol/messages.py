"""Typed messages of the client protocol (Centrifugo client protocol v2, JSON encoding).

Requests are what clients send; the session answers with plain dicts that
:mod:`tidings.protocol.codec` encodes. Unknown request fields are ignored, as the SDKs
add fields over time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "UNSUPPORTED_METHODS",
    "Command",
    "ConnectRequest",
    "HistoryRequest",
    "PresenceRequest",
    "PresenceStatsRequest",
    "PublishRequest",
    "RecoverPosition",
    "RefreshRequest",
    "RpcRequest",
    "SubRefreshRequest",
    "SubscribeRequest",
    "UnsubscribeRequest",
]

#: Methods of the protocol that tidings does not offer; answered with error 108.
#: (``rpc`` is answered 108 only when no RPC proxy is configured.)
UNSUPPORTED_METHODS = frozenset({"rpc", "ping"})


@dataclass(frozen=True, slots=True)
class RecoverPosition:
    """Where a client stands in a channel's stream: the last offset it saw and the epoch."""

    offset: int = 0
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """``connect``: authenticate and, for server-side subscriptions, ask for recovery."""

    token: str = ""
    name: str = ""
    version: str = ""
    #: Server-side subscriptions to recover: channel -> position (only ``recover: true`` ones).
    subs: dict[str, RecoverPosition] = field(default_factory=dict)
    #: Compact JSON of the ``data`` field (for the connect proxy), None when absent.
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """``subscribe``: join a channel, optionally recovering from a position."""

    channel: str
    token: str = ""
    recover: bool = False
    position: RecoverPosition = RecoverPosition()
    #: Compact JSON of the ``data`` field (for the subscribe proxy), None when absent.
    data: bytes | None = None
    #: The client asks for ``join``/``leave`` pushes (granted where the namespace allows).
    join_leave: bool = False


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """``unsubscribe``: leave a channel."""

    channel: str


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """``refresh``: a new connection token before the current one expires."""

    token: str


@dataclass(frozen=True, slots=True)
class SubRefreshRequest:
    """``sub_refresh``: a new subscription token for one channel."""

    channel: str
    token: str


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """``history``: read a channel's retained publications.

    Attributes:
        channel: the channel.
        limit: how many publications at most; 0 asks for the stream position only, a
            negative number for everything retained (both capped by the server).
        since: only publications after this position (before it when ``reverse``).
        reverse: newest first.
    """

    channel: str
    limit: int = 0
    since: RecoverPosition | None = None
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """``rpc``: a call the application's backend answers (the RPC proxy)."""

    method: str = ""
    #: Compact JSON of the ``data`` field, None when absent.
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """``publish``: a client's publication into a channel."""

    channel: str
    #: Compact JSON of the ``data`` field.
    data: bytes


@dataclass(frozen=True, slots=True)
class PresenceRequest:
    """``presence``: who is subscribed to a channel."""

    channel: str


@dataclass(frozen=True, slots=True)
class PresenceStatsRequest:
    """``presence_stats``: how many clients and users are subscribed to a channel."""

    channel: str


Request = (
    ConnectRequest
    | SubscribeRequest
    | UnsubscribeRequest
    | RefreshRequest
    | SubRefreshRequest
    | HistoryRequest
    | RpcRequest
    | PublishRequest
    | PresenceRequest
    | PresenceStatsRequest
)


@dataclass(frozen=True, slots=True)
class Command:
    """One decoded command.

    Attributes:
        id: the client's command id; 0 for a pong or a ``send`` (no reply expected).
        method: the method key, "" for a pong (``{}``).
        request: the typed request, or None for methods without one we use.
        error: set when the command was understood as far as its method but its request was
            invalid; the session answers it with error 107 (bad request).
    """

    id: int
    method: str
    request: Request | None = None
    error: str = ""
    raw: dict[str, Any] | None = None
