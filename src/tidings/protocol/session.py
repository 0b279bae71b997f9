"""The client protocol session: a sans-I/O state machine.

A :class:`Session` takes frames (``receive``) and the passing of time (``tick``) and
produces reply messages (``take_output``) and, at most once, a close code (``close``). It
owns no socket and no event loop: the transports feed it and write what it produces. It
reaches the rest of the node only through :class:`SessionHost`, whose calls are all
synchronous, so the effects of one frame happen in one step and in command order.

What only the network can answer (the application's backend, through the proxies) leaves
the session as an operation (:mod:`tidings.protocol.operations`): ``take_operations``
hands it to the host, ``complete`` brings its outcome back and produces the reply. While
a connect or a subscribe is out, later commands wait in arrival order (pongs excepted),
so none of them can overtake it.

Publications do not pass through the session: the hub hands them straight to the
connection's writer (the ``subscriber`` handle given here), so the hot path is free of
protocol logic.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from tidings import __version__
from tidings.auth import ConnectionClaims, SubscriptionClaims
from tidings.channels import (
    ChannelName,
    InvalidName,
    NameKind,
    check_presence,
    check_publish,
    check_subscribe,
    name_problem,
    parse_channel,
    read_channel,
)
from tidings.codes import DisconnectCode, ErrorCode
from tidings.config import ChannelOptions, ClientSettings
from tidings.errors import TokenError
from tidings.presence import ClientInfo
from tidings.protocol import codec
from tidings.protocol.codec import ProtocolError, raw
from tidings.protocol.messages import (
    UNSUPPORTED_METHODS,
    Command,
    ConnectRequest,
    HistoryRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RecoverPosition,
    RefreshRequest,
    RpcRequest,
    SubRefreshRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)
from tidings.protocol.operations import (
    INTERNAL,
    Answered,
    Approved,
    ConnectCall,
    Connected,
    Disconnected,
    Operation,
    Outcome,
    ProxyPublishCall,
    PublishCall,
    Published,
    RefreshCall,
    Refreshed,
    Rejected,
    RpcCall,
    SubscribeCall,
    Subscribed,
)
from tidings.subscription import HistoryPage, Recovery, Subscriber

__all__ = [
    "SERVER_UNSUBSCRIBE",
    "EmulationIds",
    "Session",
    "SessionHost",
    "SessionState",
    "SubscribeOutcome",
]

log = logging.getLogger(__name__)

#: Code of the ``unsubscribe`` push sent when the server ends a subscription; the SDK
#: treats codes below 2500 as final for that subscription.
SERVER_UNSUBSCRIBE = 2000


#: Operations of one connection that let later commands pass (rpc, publish) and may be out
#: at once; more are answered 111, so a client cannot pile up backend calls or appends to
#: the log faster than they end.
MAX_OPERATIONS_IN_FLIGHT = 100
#: Commands that may wait behind a connect or a subscribe that is out; more close the
#: connection with 3013 (too many requests).
MAX_WAITING_COMMANDS = 100

_ADMIT_REASONS = {
    DisconnectCode.CONNECTION_LIMIT: "connection limit reached "
    "(client.max_connections_per_user or client.max_connections)",
}


class SessionState(IntEnum):
    """Where a session is in its life."""

    CONNECTING = 0
    CONNECTED = 1
    CLOSED = 2


@dataclass(frozen=True, slots=True)
class SubscribeOutcome:
    """What the host tells the session after adding a subscription."""

    epoch: str
    #: The node's current position in the log.
    offset: int
    #: Whether the channel keeps history (the client may recover on it later).
    recoverable: bool
    recovery: Recovery | None


@dataclass(frozen=True, slots=True)
class EmulationIds:
    """Where the commands of an emulated connection (HTTP stream, SSE) are to be posted:
    the SDK learns both from the connect result and sends them with every command."""

    #: The unguessable id of the connection's stream (a capability: never logged).
    session: str
    #: The worker holding it.
    node: str


class SessionHost(Protocol):
    """The node as a session sees it; every call is synchronous."""

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

    def admit(self, session: Session) -> DisconnectCode | None:
        """Registers an authenticated session; a code refuses it (limits)."""

    def subscribe(
        self, sub: Subscriber, channel: str, recover: RecoverPosition | None
    ) -> SubscribeOutcome:
        """Adds the subscription (and computes the recovery) atomically."""

    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        """Removes the subscription."""

    def release(self, session: Session) -> None:
        """Forgets a session that closed (after its subscriptions were removed)."""

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


class Session:
    """One client connection's protocol state.

    Args:
        host: the node.
        subscriber: the handle the hub delivers publications to (the connection's writer).
        settings: timers and limits.
        now: the current time in seconds (any monotonic clock, used consistently).
        bidirectional: False for the push-only transports (SSE, uni WebSocket): their
            pushes have no reply wrapper and no pong is expected.
        wall_clock: the current Unix time, to compare with token expiries.
        emulation: for an emulated bidirectional connection, the ids its connect result
            hands the client.
    """

    __slots__ = (
        "_bidirectional",
        "_close",
        "_close_reason",
        "_emulation",
        "_expires_at",
        "_holder",
        "_host",
        "_in_flight",
        "_meta",
        "_next_ping",
        "_operations",
        "_output",
        "_pong_deadline",
        "_refreshing",
        "_server_refresh",
        "_settings",
        "_stale_at",
        "_sub_expiry",
        "_subscriber",
        "_tickets",
        "_waiting",
        "_wall_offset",
        "channels",
        "client_id",
        "info",
        "server_channels",
        "state",
        "user",
    )

    def __init__(
        self,
        host: SessionHost,
        subscriber: Subscriber,
        settings: ClientSettings,
        now: float,
        *,
        bidirectional: bool = True,
        wall_clock: float | None = None,
        emulation: EmulationIds | None = None,
    ) -> None:
        self._host = host
        self._emulation = emulation
        self._subscriber = subscriber
        self._settings = settings
        self._bidirectional = bidirectional
        # Token expiries are Unix times; timers use the caller's clock. Keep the offset.
        self._wall_offset = (wall_clock if wall_clock is not None else now) - now
        self._output: list[bytes] = []
        self._operations: list[Operation] = []
        #: Tickets of the operations out, and the last ticket given.
        self._in_flight: set[int] = set()
        self._tickets = 0
        #: The ticket of the connect or subscribe that later commands wait for, or 0.
        self._holder = 0
        self._waiting: deque[Command] = deque()
        #: The connection expires by the refresh proxy's word, not by a token's.
        self._server_refresh = False
        self._refreshing = False
        self._meta: bytes | None = None
        self._close: int | None = None
        self._close_reason = ""
        self._stale_at = now + settings.stale_timeout
        self._next_ping = 0.0
        self._pong_deadline = 0.0
        self._expires_at = 0
        self._sub_expiry: dict[str, int] | None = None
        self.state = SessionState.CONNECTING
        self.client_id = ""
        self.user = ""
        self.info: bytes | None = None
        self.channels: set[str] = set()
        self.server_channels: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ outputs
    def take_output(self) -> list[bytes]:
        """The messages to send, in order (each one line of JSON); clears them."""
        out, self._output = self._output, []
        return out

    def take_operations(self) -> list[Operation]:
        """The operations for the host to perform, in command order; clears them."""
        out, self._operations = self._operations, []
        return out

    def complete(self, operation: Operation, outcome: Outcome, now: float) -> None:
        """The host performed ``operation``: produces its reply (or close), then runs the
        commands that waited for it. An operation completed twice, or after the session
        closed, is ignored."""
        if operation.ticket not in self._in_flight:
            return
        self._in_flight.discard(operation.ticket)
        if self.state is SessionState.CLOSED:
            return
        if isinstance(operation, ConnectCall):
            self._connected(operation, outcome, now)
        elif isinstance(operation, SubscribeCall):
            self._subscribed(operation, outcome, now)
        elif isinstance(operation, RpcCall):
            self._answered(operation, outcome)
        elif isinstance(operation, PublishCall):
            self._published(operation, outcome)
        elif isinstance(operation, ProxyPublishCall):
            self._approved(operation, outcome)
        else:
            self._refreshed(outcome, now)
        if self._holder == operation.ticket:
            self._holder = 0
            while self._waiting and not self._holder and self._close is None:
                self._handle(self._waiting.popleft(), now)

    @property
    def handle(self) -> Any:
        """The subscriber handle given at creation (the connection's writer)."""
        return self._subscriber

    @property
    def pending(self) -> int:
        """How many operations are out (given to the host and not completed)."""
        return len(self._in_flight)

    @property
    def close_code(self) -> int | None:
        """Set once the session wants the connection closed with this code (tidings' own,
        a :class:`DisconnectCode`, or one an application backend chose)."""
        return self._close

    @property
    def close_reason(self) -> str:
        """Plain-text detail of the close (which limit, what was wrong); "" for the default."""
        return self._close_reason

    @property
    def deadline(self) -> float:
        """The next time ``tick`` has something to do."""
        if self.state is SessionState.CLOSED:
            return float("inf")
        if self.state is SessionState.CONNECTING:
            return self._stale_at
        times = [self._next_ping]
        if self._pong_deadline:
            times.append(self._pong_deadline)
        if self._server_refresh:
            if self._expires_at and not self._refreshing:
                times.append(self._expires_at - self._wall_offset)
        elif self._expires_at:
            times.append(self._expires_at + self._settings.expired_close_delay - self._wall_offset)
        if self._sub_expiry:
            times.append(
                min(self._sub_expiry.values())
                + self._settings.expired_close_delay
                - self._wall_offset
            )
        return min(times)

    # ------------------------------------------------------------------ inputs
    def receive(self, frame: str | bytes, now: float) -> None:
        """Processes every command of one frame, in order."""
        if self.state is SessionState.CLOSED:
            return
        try:
            commands = codec.decode_frame(frame, self._settings.max_commands_per_frame)
        except ProtocolError as exc:
            log.debug("client %s sent a bad frame: %s", self.client_id or "-", exc)
            self._disconnect(DisconnectCode.BAD_REQUEST, str(exc))
            return
        for command in commands:
            if self._holder and (command.method or self.state is SessionState.CONNECTING):
                # A connect or subscribe is out: this command must see its effect (a pong
                # of a connected client changes nothing it could see).
                if len(self._waiting) >= MAX_WAITING_COMMANDS:
                    self._disconnect(DisconnectCode.TOO_MANY_REQUESTS, "too many commands")
                    return
                self._waiting.append(command)
                continue
            self._handle(command, now)
            if self._close is not None:
                return  # the rest of the frame is not processed after a disconnect

    def connect_unidirectional(self, request: ConnectRequest, now: float) -> None:
        """Connects a push-only client from its connect request (no command id)."""
        if self.state is not SessionState.CONNECTING or self._holder:
            return
        result = self._connect(request, now)
        if result is not None:
            self._output.append(codec.encode({"connect": result}))

    def tick(self, now: float) -> None:
        """Runs the timers: stale connect, pings, pong timeout, token expiry."""
        if self.state is SessionState.CLOSED:
            return
        if self.state is SessionState.CONNECTING:
            if now >= self._stale_at:
                self._disconnect(DisconnectCode.STALE)
            return
        wall = now + self._wall_offset
        delay = self._settings.expired_close_delay
        if self._server_refresh:
            if self._expires_at and not self._refreshing and wall >= self._expires_at:
                if not self._host.proxies("refresh"):
                    self._disconnect(DisconnectCode.EXPIRED)
                    return
                self._refreshing = True
                self._start(RefreshCall(self._ticket(), self.client_id, self.user, self._meta))
        elif self._expires_at and wall >= self._expires_at + delay:
            self._disconnect(DisconnectCode.EXPIRED)
            return
        if self._sub_expiry and wall >= min(self._sub_expiry.values()) + delay:
            self._disconnect(DisconnectCode.SUBSCRIPTION_EXPIRED)
            return
        if self._pong_deadline and now >= self._pong_deadline:
            self._disconnect(DisconnectCode.NO_PONG)
            return
        if now >= self._next_ping:
            self._output.append(b"{}")
            self._next_ping = now + self._settings.ping_interval
            if self._bidirectional and not self._pong_deadline:
                self._pong_deadline = now + self._settings.pong_timeout

    def closed(self) -> None:
        """The transport is gone: drop every subscription and leave the node."""
        was_connected = self.state is SessionState.CONNECTED
        self.state = SessionState.CLOSED
        self._waiting.clear()
        for channel in self.channels:
            self._host.unsubscribe(self._subscriber, channel)
        self.channels = set()
        if was_connected:
            self._host.release(self)

    def disconnect(self, code: int) -> None:
        """Asks for the connection to be closed with ``code`` (server-initiated)."""
        self._disconnect(code)

    # ------------------------------------------------------------------ commands
    def _disconnect(self, code: int, reason: str = "") -> None:
        if self._close is None:
            self._close = code
            self._close_reason = reason
        self.closed()

    def _reply(self, command: Command, result: dict[str, Any]) -> None:
        if command.id:
            self._output.append(codec.encode_reply(command.id, command.method, result))

    def _error(self, command: Command, code: ErrorCode, message: str = "") -> None:
        self._host.count_error(code)
        if command.id:
            self._output.append(codec.encode_error(command.id, code, message))

    def _rejected(self, command_id: int, method: str, outcome: Outcome) -> None:
        """Answers a command whose operation did not succeed: the backend's error as it
        gave it, its disconnect as a close, anything else as an internal error."""
        if isinstance(outcome, Disconnected):
            self._disconnect(outcome.code, outcome.reason)
            return
        if not isinstance(outcome, Rejected):
            log.warning("unexpected outcome of %s: %r", method, outcome)
            outcome = INTERNAL
        self._host.count_error(outcome.code)
        if command_id:
            self._output.append(
                codec.encode_error(command_id, outcome.code, outcome.message, outcome.temporary)
            )

    # ------------------------------------------------------------------ operations
    def _ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def _start(self, operation: Operation) -> None:
        self._in_flight.add(operation.ticket)
        self._operations.append(operation)
        if operation.holds:
            self._holder = operation.ticket

    def _handle(self, command: Command, now: float) -> None:
        method = command.method
        if self.state is SessionState.CONNECTING:
            if method != "connect" or command.request is None:
                self._disconnect(DisconnectCode.BAD_REQUEST, "the first command must be connect")
                return
            assert isinstance(command.request, ConnectRequest)
            result = self._connect(command.request, now, command)
            if result is not None:
                self._reply(command, result)
            return
        if method == "":
            self._pong_deadline = 0.0
            return
        if method == "connect":
            self._disconnect(DisconnectCode.BAD_REQUEST, "already connected")
            return
        if method == "send":
            return  # async messages to the backend are not offered; a send has no reply
        if not command.id and method != "?":
            # Every known command is answered, and an answer needs an id to go to (unknown
            # ones without an id are ignored, for clients newer than this server).
            self._disconnect(DisconnectCode.BAD_REQUEST, f"{method} without an id")
            return
        if command.error:
            self._error(command, ErrorCode.BAD_REQUEST, command.error)
            return
        request = command.request
        if isinstance(request, SubscribeRequest):
            self._subscribe(command, request, now)
        elif isinstance(request, UnsubscribeRequest):
            self._unsubscribe(command, request)
        elif isinstance(request, RefreshRequest):
            self._refresh(command, request, now)
        elif isinstance(request, SubRefreshRequest):
            self._sub_refresh(command, request, now)
        elif isinstance(request, HistoryRequest):
            self._history(command, request)
        elif isinstance(request, PublishRequest):
            self._publish(command, request)
        elif isinstance(request, PresenceRequest | PresenceStatsRequest):
            self._presence(command, request)
        elif isinstance(request, RpcRequest) and self._host.proxies("rpc"):
            self._rpc(command, request)
        elif method in UNSUPPORTED_METHODS:
            self._error(command, ErrorCode.NOT_AVAILABLE)
        else:
            self._error(command, ErrorCode.METHOD_NOT_FOUND)

    def _connect(
        self, request: ConnectRequest, now: float, command: Command | None = None
    ) -> dict[str, Any] | None:
        if request.token:
            try:
                claims = self._host.authenticate(request.token)
            except TokenError as exc:
                if exc.expired and command is not None:
                    self._error(command, ErrorCode.TOKEN_EXPIRED)
                    return None
                log.info("connection refused: %s", exc.reason)
                if exc.expired and self._bidirectional:
                    self._disconnect(DisconnectCode.EXPIRED)
                else:
                    # A push-only client would reconnect with the same token forever:
                    # an expired one is as final for it as an invalid one.
                    self._disconnect(DisconnectCode.INVALID_TOKEN, exc.reason)
                return None
        elif self._host.proxies("connect"):
            # Centrifugo names the client before asking the backend, which may log it.
            self.client_id = str(uuid.uuid4())
            command_id = command.id if command is not None else 0
            self._start(ConnectCall(self._ticket(), self.client_id, "", None, request, command_id))
            return None
        elif self._settings.insecure or self._host.anonymous_allowed():
            claims = ConnectionClaims("", 0, (), None)
        else:
            log.info("connection refused: no token")
            self._disconnect(DisconnectCode.INVALID_TOKEN)
            return None
        return self._accept(claims, request, now)

    def _accept(
        self,
        claims: ConnectionClaims,
        request: ConnectRequest,
        now: float,
        sub_data: dict[str, bytes] | None = None,
    ) -> dict[str, Any] | None:
        """Admits an authenticated connection and makes its server-side subscriptions;
        returns the connect result, or None after closing (limits)."""
        self.user = claims.user
        self.info = claims.info
        self._expires_at = claims.expires_at
        self.client_id = self.client_id or str(uuid.uuid4())
        refused = self._host.admit(self)
        if refused is not None:
            self.client_id = ""
            self._disconnect(refused, _ADMIT_REASONS.get(refused, ""))
            return None
        self.state = SessionState.CONNECTED
        self._next_ping = now + self._settings.ping_interval
        subs: dict[str, Any] = {}
        server_channels = []
        for channel in claims.channels:
            name = parse_channel(channel)
            if name is None or self._host.channel_options(name) is None:
                log.warning("token of user %r names unknown channel %r", self.user, channel)
                continue
            if len(self.channels) >= self._settings.max_subscriptions:
                self._disconnect(DisconnectCode.CHANNEL_LIMIT, "client.max_subscriptions reached")
                return None
            outcome = self._host.subscribe(self._subscriber, channel, request.subs.get(channel))
            self.channels.add(channel)
            self._track(channel, self._forced_join_leave(name))
            server_channels.append(channel)
            subs[channel] = self._subscribe_result(outcome)
            if sub_data and channel in sub_data:
                subs[channel]["data"] = raw(sub_data[channel])
        self.server_channels = frozenset(server_channels)
        result: dict[str, Any] = {
            "client": self.client_id,
            "version": __version__,
            "ping": int(self._settings.ping_interval),
        }
        if self._bidirectional:
            result["pong"] = True
        if self._emulation is not None:
            result["session"] = self._emulation.session
            result["node"] = self._emulation.node
        if subs:
            result["subs"] = subs
        if self._expires_at and not self._server_refresh:
            # With the refresh proxy the server extends the connection; the client has no
            # token to send.
            result["expires"] = True
            result["ttl"] = self._ttl(self._expires_at, now)
        return result

    def _ttl(self, expires_at: int, now: float) -> int:
        return max(1, int(expires_at - (now + self._wall_offset)))

    @staticmethod
    def _subscribe_result(outcome: SubscribeOutcome) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if outcome.recoverable:
            result["recoverable"] = True
            result["positioned"] = True
            result["epoch"] = outcome.epoch
            result["offset"] = outcome.offset
        recovery = outcome.recovery
        if recovery is not None:
            result["was_recovering"] = True
            if recovery.recovered:
                result["recovered"] = True
                if recovery.publications:
                    result["publications"] = [raw(p.pub) for p in recovery.publications]
        return result

    def _subscribe(self, command: Command, request: SubscribeRequest, now: float) -> None:
        channel = request.channel
        if channel in self.channels:
            self._error(command, ErrorCode.ALREADY_SUBSCRIBED)
            return
        if len(self.channels) >= self._settings.max_subscriptions:
            limit = "too many subscriptions (client.max_subscriptions)"
            self._error(command, ErrorCode.LIMIT_EXCEEDED, limit)
            return
        try:
            name = read_channel(channel)
        except InvalidName as exc:
            # As Centrifugo answers a channel over its length limit: 107, not 102.
            self._error(command, ErrorCode.BAD_REQUEST, str(exc))
            return
        options = self._host.channel_options(name)
        if options is None:
            self._error(command, ErrorCode.UNKNOWN_CHANNEL)
            return
        if options.proxy_subscribe and not request.token:
            # The backend decides instead of the namespace's permissions; a subscription
            # token still decides by itself, as in Centrifugo.
            self._start(
                SubscribeCall(
                    self._ticket(), self.client_id, self.user, self._meta, request, command.id
                )
            )
            return
        sub_claims: SubscriptionClaims | None = None
        if request.token:
            try:
                sub_claims = self._host.verify_subscription(
                    request.token, channel, self.user, self.client_id
                )
            except TokenError as exc:
                if exc.expired:
                    self._error(command, ErrorCode.TOKEN_EXPIRED)
                else:
                    log.info("subscription to %r refused: %s", channel, exc.reason)
                    self._error(command, ErrorCode.PERMISSION_DENIED)
                return
        refused = (
            None
            if self._settings.insecure
            else check_subscribe(name, options, self.user, sub_claims is not None)
        )
        if refused is not None:
            self._error(command, refused)
            return
        result = self._enter(request)
        if sub_claims is not None and sub_claims.expires_at:
            if self._sub_expiry is None:
                self._sub_expiry = {}
            self._sub_expiry[channel] = sub_claims.expires_at
            result["expires"] = True
            result["ttl"] = self._ttl(sub_claims.expires_at, now)
        self._reply(command, result)

    def _enter(self, request: SubscribeRequest) -> dict[str, Any]:
        """Adds an allowed subscription; returns its result."""
        outcome = self._host.subscribe(
            self._subscriber, request.channel, request.position if request.recover else None
        )
        self.channels.add(request.channel)
        name = parse_channel(request.channel)
        options = self._host.channel_options(name) if name is not None else None
        if name is not None and options is not None:
            self._track(request.channel, self._wants_join_leave(name, options, request.join_leave))
        return self._subscribe_result(outcome)

    def _unsubscribe(self, command: Command, request: UnsubscribeRequest) -> None:
        channel = request.channel
        if channel in self.channels and channel not in self.server_channels:
            self.channels.discard(channel)
            self._host.unsubscribe(self._subscriber, channel)
            if self._sub_expiry:
                self._sub_expiry.pop(channel, None)
        # Unsubscribing from a channel one is not on is not an error: the SDK needs a reply.
        self._reply(command, {})

    def _refresh(self, command: Command, request: RefreshRequest, now: float) -> None:
        try:
            claims = self._host.authenticate(request.token)
        except TokenError as exc:
            log.info("refresh refused for user %r: %s", self.user, exc.reason)
            self._disconnect(
                DisconnectCode.EXPIRED if exc.expired else DisconnectCode.INVALID_TOKEN
            )
            return
        if claims.user != self.user:
            log.info(
                "refresh refused: token of user %r on a connection of %r", claims.user, self.user
            )
            self._disconnect(DisconnectCode.INVALID_TOKEN)
            return
        self._expires_at = claims.expires_at
        result: dict[str, Any] = {}
        if claims.expires_at:
            result["expires"] = True
            result["ttl"] = self._ttl(claims.expires_at, now)
        self._reply(command, result)

    def _sub_refresh(self, command: Command, request: SubRefreshRequest, now: float) -> None:
        channel = request.channel
        if channel not in self.channels:
            self._error(command, ErrorCode.PERMISSION_DENIED, "not subscribed")
            return
        try:
            claims = self._host.verify_subscription(
                request.token, channel, self.user, self.client_id
            )
        except TokenError as exc:
            log.info("sub_refresh of %r refused: %s", channel, exc.reason)
            if exc.expired:
                self._disconnect(DisconnectCode.SUBSCRIPTION_EXPIRED)
            else:
                self._error(command, ErrorCode.PERMISSION_DENIED)
            return
        result: dict[str, Any] = {}
        if self._sub_expiry is not None:
            self._sub_expiry.pop(channel, None)
        if claims.expires_at:
            if self._sub_expiry is None:
                self._sub_expiry = {}
            self._sub_expiry[channel] = claims.expires_at
            result["expires"] = True
            result["ttl"] = self._ttl(claims.expires_at, now)
        self._reply(command, result)

    # ------------------------------------------------------------------ history
    def _history(self, command: Command, request: HistoryRequest) -> None:
        channel = request.channel
        try:
            name = read_channel(channel)
        except InvalidName as exc:
            self._error(command, ErrorCode.BAD_REQUEST, str(exc))
            return
        options = self._host.channel_options(name)
        if options is None:
            self._error(command, ErrorCode.UNKNOWN_CHANNEL)
            return
        if options.history_size <= 0 or options.history_ttl <= 0:
            self._error(command, ErrorCode.NOT_AVAILABLE, "history is off for this channel")
            return
        if not self._may_read_history(name, options):
            self._error(command, ErrorCode.PERMISSION_DENIED)
            return
        if request.reverse and request.since is not None and request.since.offset == 0:
            self._error(command, ErrorCode.BAD_REQUEST, "reverse since offset 0 reads nothing")
            return
        most = self._settings.history_max_limit
        limit = most if request.limit < 0 or request.limit > most else request.limit
        page = self._host.read_history(channel, limit, request.since, request.reverse)
        if page is None:
            self._error(command, ErrorCode.UNRECOVERABLE_POSITION)
            return
        result: dict[str, Any] = {"epoch": page.epoch, "offset": page.offset}
        if page.publications:
            result["publications"] = [raw(p.pub) for p in page.publications]
        self._reply(command, result)

    def _may_read_history(self, name: ChannelName, options: ChannelOptions) -> bool:
        """``allow_history_for_subscriber``: subscribed here; ``allow_history_for_client``:
        any channel this client could subscribe to by itself (never a private or another
        user's channel, which would leak what a subscription refuses)."""
        if self._settings.insecure:
            return True
        if options.allow_history_for_subscriber and name.name in self.channels:
            return True
        return options.allow_history_for_client and (
            check_subscribe(name, options, self.user, has_valid_token=False) is None
        )

    # ------------------------------------------------------------------ server API commands
    def _push(self, push: dict[str, Any]) -> None:
        """Queues a push (wrapped for the SDK, bare for the push-only transports)."""
        self._output.append(codec.encode({"push": push} if self._bidirectional else push))

    def server_subscribe(self, channel: str) -> bool:
        """Subscribes on the server's initiative (server API ``subscribe``) and tells the
        client with a ``subscribe`` push; the client cannot leave the channel by itself.

        Returns:
            False when nothing was done: not connected, already subscribed, the namespace
            is unknown, or the connection is at ``client.max_subscriptions``.
        """
        if self.state is not SessionState.CONNECTED or channel in self.channels:
            return False
        name = parse_channel(channel)
        if name is None or self._host.channel_options(name) is None:
            return False
        if len(self.channels) >= self._settings.max_subscriptions:
            log.info("server subscribe of %r to %r: at max_subscriptions", self.user, channel)
            return False
        outcome = self._host.subscribe(self._subscriber, channel, None)
        self.channels.add(channel)
        self._track(channel, self._forced_join_leave(name))
        self.server_channels = self.server_channels | {channel}
        self._push({"channel": channel, "subscribe": self._subscribe_result(outcome)})
        return True

    def server_unsubscribe(self, channel: str) -> bool:
        """Ends a subscription on the server's initiative and tells the client with an
        ``unsubscribe`` push (code 2000, which the SDK does not retry).

        Returns:
            False when the connection was not subscribed to ``channel``.
        """
        if self.state is not SessionState.CONNECTED or channel not in self.channels:
            return False
        self.channels.discard(channel)
        self.server_channels = self.server_channels - {channel}
        self._host.unsubscribe(self._subscriber, channel)
        if self._sub_expiry:
            self._sub_expiry.pop(channel, None)
        self._push(
            {"channel": channel, "unsubscribe": {"code": SERVER_UNSUBSCRIBE, "reason": "server"}}
        )
        return True

    def server_refresh(self, expired: bool, expires_at: int) -> None:
        """Sets the connection's expiry on the server's initiative (server API ``refresh``):
        ``expired`` closes it now with 3005, else ``expires_at`` (0: never) replaces the
        token's expiry."""
        if self.state is not SessionState.CONNECTED:
            return
        if expired:
            self._disconnect(DisconnectCode.EXPIRED)
            return
        self._expires_at = expires_at

    # ------------------------------------------------------------------ proxies
    def _rpc(self, command: Command, request: RpcRequest) -> None:
        problem = name_problem(request.method, NameKind.METHOD)
        if problem is not None:
            self._error(command, ErrorCode.BAD_REQUEST, problem)
            return
        if not self._host.proxies("rpc", request.method):
            self._error(command, ErrorCode.METHOD_NOT_FOUND)
            return
        if len(self._in_flight) >= MAX_OPERATIONS_IN_FLIGHT:
            self._error(command, ErrorCode.TOO_MANY_REQUESTS, "too many calls in flight")
            return
        self._start(
            RpcCall(
                self._ticket(),
                self.client_id,
                self.user,
                self._meta,
                request.method,
                request.data,
                command.id,
            )
        )

    def _connected(self, call: ConnectCall, outcome: Outcome, now: float) -> None:
        """The connect proxy answered."""
        if not isinstance(outcome, Connected):
            log.info("connection refused by the backend: %r", outcome)
            if self._bidirectional or isinstance(outcome, Disconnected):
                self._rejected(call.command_id, "connect", outcome)
            elif isinstance(outcome, Rejected) and outcome.temporary:
                self._disconnect(DisconnectCode.INTERNAL_ERROR, outcome.message)
            else:
                # A push-only client has no error reply to read: its refusal is a close.
                message = outcome.message if isinstance(outcome, Rejected) else ""
                self._disconnect(DisconnectCode.PERMISSION_DENIED, message)
            return
        if outcome.expire_at and outcome.expire_at <= now + self._wall_offset:
            log.info("connect proxy gave user %r an expire_at in the past", outcome.user)
            self._disconnect(DisconnectCode.EXPIRED)
            return
        self._server_refresh = True
        self._meta = outcome.meta
        claims = ConnectionClaims(outcome.user, outcome.expire_at, outcome.channels, outcome.info)
        result = self._accept(claims, call.request, now, dict(outcome.sub_data))
        if result is None:
            return
        if outcome.data is not None:
            result["data"] = raw(outcome.data)
        if self._bidirectional:
            if call.command_id:
                self._output.append(codec.encode_reply(call.command_id, "connect", result))
        else:
            self._output.append(codec.encode({"connect": result}))

    def _subscribed(self, call: SubscribeCall, outcome: Outcome, now: float) -> None:
        """The subscribe proxy answered."""
        if not isinstance(outcome, Subscribed):
            log.info("subscription to %r refused by the backend: %r", call.request.channel, outcome)
            self._rejected(call.command_id, "subscribe", outcome)
            return
        command = Command(call.command_id, "subscribe")
        if call.request.channel in self.channels:
            # The server API subscribed it meanwhile.
            self._error(command, ErrorCode.ALREADY_SUBSCRIBED)
            return
        if len(self.channels) >= self._settings.max_subscriptions:
            limit = "too many subscriptions (client.max_subscriptions)"
            self._error(command, ErrorCode.LIMIT_EXCEEDED, limit)
            return
        result = self._enter(call.request)
        if outcome.data is not None:
            result["data"] = raw(outcome.data)
        self._reply(command, result)

    def _answered(self, call: RpcCall, outcome: Outcome) -> None:
        """The RPC proxy answered."""
        if not isinstance(outcome, Answered):
            self._rejected(call.command_id, "rpc", outcome)
            return
        result: dict[str, Any] = {}
        if outcome.data is not None:
            result["data"] = raw(outcome.data)
        self._reply(Command(call.command_id, "rpc"), result)

    def _refreshed(self, outcome: Outcome, now: float) -> None:
        """The refresh proxy answered (the host turns its own failures into a retry time)."""
        self._refreshing = False
        if isinstance(outcome, Disconnected):
            self._disconnect(outcome.code, outcome.reason)
            return
        wall = now + self._wall_offset
        if (
            not isinstance(outcome, Refreshed)
            or outcome.expired
            or (outcome.expire_at and outcome.expire_at <= wall)
        ):
            log.info("connection of user %r expired (refresh proxy: %r)", self.user, outcome)
            self._disconnect(DisconnectCode.EXPIRED)
            return
        self._expires_at = outcome.expire_at
        if outcome.info is not None:
            self.info = outcome.info

    # ------------------------------------------------------------------ presence, publish
    @property
    def client_info(self) -> ClientInfo:
        """This connection as others see it in presence, join/leave and publications."""
        return ClientInfo(self.user, self.client_id, self.info)

    def _forced_join_leave(self, name: ChannelName) -> bool:
        """Whether a server-side subscription gets join/leave: only when forced."""
        options = self._host.channel_options(name)
        return options is not None and options.force_push_join_leave

    def _wants_join_leave(self, name: ChannelName, options: ChannelOptions, asked: bool) -> bool:
        """Centrifugo's rule: every subscriber gets join/leave with ``force_push_join_leave``;
        otherwise one who asked, where ``join_leave`` is on and presence is open to it."""
        if options.force_push_join_leave:
            return True
        return asked and options.join_leave and self._may(check_presence, name, options, True)

    def _track(self, channel: str, push_join_leave: bool) -> None:
        self._host.track(self._subscriber, channel, self.client_info, push_join_leave)

    def _may(
        self,
        check: Any,
        name: ChannelName,
        options: ChannelOptions,
        subscribed: bool,
    ) -> bool:
        """Whether ``check`` (publish or presence) lets this client act on ``name``. The
        ``*_for_client`` options cover only channels the client could subscribe to by
        itself, as ``allow_history_for_client`` does: never a private channel or another
        user's. Insecure mode allows everything."""
        if self._settings.insecure:
            return True
        could_subscribe = check_subscribe(name, options, self.user, has_valid_token=False) is None
        return bool(check(options, self.user, subscribed, could_subscribe) is None)

    def _command_channel(
        self, command: Command, channel: str
    ) -> tuple[ChannelName, ChannelOptions] | None:
        """The parsed channel of a command and its options, or None after answering 107 (an
        invalid name) or 102 (an unknown namespace), as subscribe does."""
        try:
            name = read_channel(channel)
        except InvalidName as exc:
            self._error(command, ErrorCode.BAD_REQUEST, str(exc))
            return None
        options = self._host.channel_options(name)
        if options is None:
            self._error(command, ErrorCode.UNKNOWN_CHANNEL)
            return None
        return name, options

    def _presence(self, command: Command, request: PresenceRequest | PresenceStatsRequest) -> None:
        channel = request.channel
        found = self._command_channel(command, channel)
        if found is None:
            return
        name, options = found
        if not options.presence:
            self._error(command, ErrorCode.NOT_AVAILABLE, "presence is off in this namespace")
            return
        if not self._may(check_presence, name, options, channel in self.channels):
            self._error(command, ErrorCode.PERMISSION_DENIED)
            return
        members = self._host.presence(channel)
        if isinstance(request, PresenceStatsRequest):
            users = {info.user for info in members.values()}
            self._reply(command, {"num_clients": len(members), "num_users": len(users)})
        else:
            self._reply(
                command, {"presence": {cid: info.to_obj() for cid, info in members.items()}}
            )

    def _publish(self, command: Command, request: PublishRequest) -> None:
        """An allowed publication leaves as an operation: the reply waits for the log."""
        channel = request.channel
        found = self._command_channel(command, channel)
        if found is None:
            return
        name, options = found
        if not options.proxy_publish and not self._may(
            check_publish, name, options, channel in self.channels
        ):
            log.info("publish of user %r to %r refused", self.user, channel)
            self._error(command, ErrorCode.PERMISSION_DENIED)
            return
        if len(self._in_flight) >= MAX_OPERATIONS_IN_FLIGHT:
            self._error(command, ErrorCode.TOO_MANY_REQUESTS, "too many calls in flight")
            return
        if options.proxy_publish:
            # The backend decides instead of the namespace's allow_publish_* options.
            self._start(
                ProxyPublishCall(
                    self._ticket(),
                    self.client_id,
                    self.user,
                    self._meta,
                    channel,
                    request.data,
                    self.info,
                    command.id,
                )
            )
            return
        self._append(command.id, channel, request.data)

    def _append(self, command_id: int, channel: str, data: bytes) -> None:
        """An allowed publication leaves for the log."""
        info = self.client_info.to_json()
        self._start(
            PublishCall(
                self._ticket(),
                self.client_id,
                self.user,
                self._meta,
                channel,
                data,
                info,
                command_id,
            )
        )

    def _approved(self, call: ProxyPublishCall, outcome: Outcome) -> None:
        """The publish proxy answered: an approved publication goes on to the log, with the
        data the backend gave in place of the client's."""
        if not isinstance(outcome, Approved):
            log.info("publish of user %r to %r refused by the backend", self.user, call.channel)
            self._rejected(call.command_id, "publish", outcome)
            return
        data = outcome.data if outcome.data is not None else call.data
        self._append(call.command_id, call.channel, data)

    def _published(self, call: PublishCall, outcome: Outcome) -> None:
        """The log took the publication (or refused it)."""
        if not isinstance(outcome, Published):
            self._rejected(call.command_id, "publish", outcome)
            return
        self._reply(Command(call.command_id, "publish"), {})
