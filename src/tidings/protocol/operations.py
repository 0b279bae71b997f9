"""Operations a session hands to its host to perform asynchronously, and their outcomes.

Some commands cannot be answered in the step that receives them: the answer comes from the
application's backend (the proxies) over the network, or from the log (a client's
``publish`` is answered once the log took the publication). The session stays sans-I/O: it
queues an :data:`Operation` (``Session.take_operations``), the host performs it and gives
back an :data:`Outcome` (``Session.complete``), and only then does the session produce the
reply. A subscription whose recovery needs the log itself (its position is older than the
channel's history window) leaves as a :class:`RecoverCall` too, and the server-side
subscriptions of a connect (the token's ``channels``, with positions in the request's
``subs``) that need it as one :class:`ConnectRecoverCall`. An operation that
:attr:`holds` the session (connect, subscribe, recover) makes the commands
after it wait until it completes, so they see its effect, as if it had been answered at
once; the others (rpc, refresh, publish) let later commands pass, their replies matched by id.

The host must complete every operation it is given, exactly once, with an outcome: a
failure of its own (timeout, refused connection, bad answer) is :data:`INTERNAL`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tidings.codes import ErrorCode
from tidings.protocol.messages import ConnectRequest, SubscribeRequest
from tidings.publication import Publication

__all__ = [
    "INTERNAL",
    "Answered",
    "Approved",
    "ConnectCall",
    "ConnectRecoverCall",
    "Connected",
    "Disconnected",
    "NodeRpcCall",
    "NotRecovered",
    "Operation",
    "Outcome",
    "Peer",
    "ProxyPublishCall",
    "PublishCall",
    "Published",
    "RecoverCall",
    "Recovered",
    "RecoveredChannels",
    "RefreshCall",
    "Refreshed",
    "Rejected",
    "RpcCall",
    "SubscribeCall",
    "Subscribed",
]


@dataclass(frozen=True, slots=True)
class Peer:
    """What the host knows of a connection's client from its HTTP request.

    Attributes:
        transport: the transport's name as Centrifugo spells it (``websocket``, ``sse``…).
        ip: the peer address as seen by this node.
        headers: the allowed request headers, ``(lower-case name, value)``.
    """

    transport: str
    ip: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls, transport: str, ip: str, headers: Mapping[str, str], allowed: Iterable[str]
    ) -> Peer:
        """Keeps only the ``allowed`` headers (names compared without regard to case)."""
        wanted = {name.lower() for name in allowed}
        kept = tuple((k.lower(), v) for k, v in headers.items() if k.lower() in wanted)
        return cls(transport, ip, kept)


@dataclass(frozen=True, slots=True)
class _Call:
    #: The session's serial number of the operation (identifies it in ``complete``).
    ticket: int
    #: The client id (assigned before the connect proxy is asked, as Centrifugo does).
    client: str
    user: str
    #: Compact JSON of the connection's ``meta`` from the connect proxy, or None.
    meta: bytes | None


@dataclass(frozen=True, slots=True)
class ConnectCall(_Call):
    """Authenticate a connection that came without a token (the connect proxy)."""

    request: ConnectRequest
    #: The connect command's id; 0 for a push-only connection.
    command_id: int = 0

    holds = True


@dataclass(frozen=True, slots=True)
class RefreshCall(_Call):
    """Extend a connection whose ``expire_at`` has come (the refresh proxy)."""

    holds = False


@dataclass(frozen=True, slots=True)
class SubscribeCall(_Call):
    """Decide a subscription (the subscribe proxy)."""

    request: SubscribeRequest
    command_id: int = 0

    holds = True


@dataclass(frozen=True, slots=True)
class RpcCall(_Call):
    """Answer a client's ``rpc`` command (the RPC proxy)."""

    method: str
    #: Compact JSON of the call's data, or None.
    data: bytes | None
    command_id: int = 0

    holds = False


@dataclass(frozen=True, slots=True)
class NodeRpcCall(_Call):
    """Answer a client's ``rpc`` to a method the node serves itself (``tidings.*``, see
    :data:`tidings.protocol.calls.NODE_METHOD_PREFIX`), never sent to the RPC proxy. The
    node answers :class:`Answered` or :class:`Rejected`."""

    method: str
    #: Compact JSON of the call's data, or None.
    data: bytes | None
    command_id: int = 0
    #: The channels the session was subscribed to when it called (read receipts accept
    #: a channel the connection reads).
    reads: frozenset[str] = frozenset()

    holds = False


@dataclass(frozen=True, slots=True)
class PublishCall(_Call):
    """Append a client's publication to the log (the node performs it, not a proxy)."""

    channel: str
    #: Compact JSON of the publication's data.
    data: bytes
    #: Compact JSON of the publisher's ClientInfo, carried in the publication's ``info``.
    info: bytes
    command_id: int = 0

    holds = False


@dataclass(frozen=True, slots=True)
class ProxyPublishCall(_Call):
    """Decide a client's publication (the publish proxy); an approved one then leaves as
    a :class:`PublishCall`. It holds the session, so publications reach the log in order."""

    channel: str
    #: Compact JSON of the publication's data.
    data: bytes
    #: Compact JSON of the connection's ``info``, or None.
    info: bytes | None
    command_id: int = 0

    holds = True


@dataclass(frozen=True, slots=True)
class RecoverCall(_Call):
    """Read what a subscribing client missed from the log, where the channel's history
    window no longer reaches its position (the node performs it, see
    :mod:`tidings.recovery`). The subscription is allowed already; it is made when the
    call completes, with what it carries here."""

    request: SubscribeRequest
    #: The subscriber's channel info (subscription token, subscribe proxy), None if none.
    chan_info: bytes | None = None
    #: Unix time the subscription token expires, 0 for none.
    expires_at: int = 0
    #: Compact JSON of the subscribe proxy's ``data`` for the client, None if none.
    data: bytes | None = None
    command_id: int = 0

    holds = True


@dataclass(frozen=True, slots=True)
class ConnectRecoverCall(_Call):
    """Read from the log what an admitted connection missed on server-side subscriptions
    whose windows no longer reach the positions its connect request gave (``since``:
    channel -> last offset seen, in the log's current epoch). They are made, and the connect
    reply sent, when the call completes, with what it carries here."""

    #: The server-side channels (the token's or the connect proxy's), in order.
    channels: tuple[str, ...]
    request: ConnectRequest
    since: Mapping[str, int]
    #: The connect proxy's ``sub_data`` (channel -> compact JSON) and ``data``, if any.
    sub_data: Mapping[str, bytes] | None = None
    data: bytes | None = None
    command_id: int = 0

    holds = True


Operation = (
    ConnectCall
    | ConnectRecoverCall
    | RefreshCall
    | SubscribeCall
    | RpcCall
    | NodeRpcCall
    | ProxyPublishCall
    | PublishCall
    | RecoverCall
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """The backend's error, answered to the command (``code`` may be the application's)."""

    code: int
    message: str
    temporary: bool = False


#: What the host answers for a failure of its own: a timeout, an unreachable backend, an
#: answer that is not what the proxy protocol defines.
INTERNAL = Rejected(int(ErrorCode.INTERNAL), ErrorCode.INTERNAL.message, True)


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The backend wants the connection closed with ``code`` and ``reason``."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Connected:
    """The connect proxy accepted the connection."""

    user: str
    #: Unix time when the connection expires (then the refresh proxy is asked); 0: never.
    expire_at: int = 0
    #: Compact JSON of ``info``, ``data`` and ``meta``, each None when absent.
    info: bytes | None = None
    data: bytes | None = None
    #: Server-side subscriptions (``channels`` and the keys of ``subs``).
    channels: tuple[str, ...] = ()
    #: Per-channel ``data`` of ``subs`` entries, sent in that subscription's result.
    sub_data: tuple[tuple[str, bytes], ...] = ()
    meta: bytes | None = None


@dataclass(frozen=True, slots=True)
class Refreshed:
    """The refresh proxy's verdict."""

    expired: bool = False
    expire_at: int = 0
    info: bytes | None = None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The subscribe proxy allowed the subscription; ``data`` goes to the client, ``info``
    is the subscriber's channel info (``chan_info``) in presence, join/leave and its
    publications."""

    data: bytes | None = None
    info: bytes | None = None


@dataclass(frozen=True, slots=True)
class Answered:
    """The RPC proxy's (or the node's own method's) result; ``data`` goes to the client."""

    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """The log took the client's publication."""


@dataclass(frozen=True, slots=True)
class Approved:
    """The publish proxy allowed the publication; ``data``, when set, replaces its data."""

    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Recovered:
    """The log gave every publication of the channel after the client's position up to
    ``position``, from where the channel's history window takes over."""

    publications: tuple[Publication, ...]
    position: int


@dataclass(frozen=True, slots=True)
class NotRecovered:
    """The log could not give what the client missed (``reason``: see
    :class:`tidings.recovery.Failed`); it is told ``recovered: false``."""

    reason: str


@dataclass(frozen=True, slots=True)
class RecoveredChannels:
    """What the log gave of each channel of a :class:`ConnectRecoverCall`."""

    found: Mapping[str, Recovered | NotRecovered]


Outcome = (
    Rejected
    | Disconnected
    | Connected
    | Refreshed
    | Subscribed
    | Answered
    | Published
    | Approved
    | Recovered
    | NotRecovered
    | RecoveredChannels
)
