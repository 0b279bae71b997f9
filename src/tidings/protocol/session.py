"""The client protocol session: a sans-I/O state machine.

A :class:`Session` takes frames (``receive``) and the passing of time (``tick``) and
produces reply messages (``take_output``) and, at most once, a close code (``close``). It
owns no socket and no event loop: the transports feed it and write what it produces. It
reaches the rest of the node only through :class:`SessionHost`,
whose calls are all synchronous, so the effects of one frame happen in one step and in
command order.

This module holds the session's inputs: frames, time, completed operations and the
server API's commands, and the dispatch of commands. The state they share, the output
and how the session answers and closes are :class:`~tidings.protocol.core.SessionCore`'s;
the commands are handled by plain functions of it, one module per concept:
:mod:`~tidings.protocol.connect` (connect, refresh, expiry),
:mod:`~tidings.protocol.subscribing` (subscriptions, client- and server-made),
:mod:`~tidings.protocol.queries` (history, presence) and :mod:`~tidings.protocol.calls`
(rpc, publish, and the outcomes of operations).

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
from collections import deque
from typing import Protocol

from tidings.codes import DisconnectCode, ErrorCode
from tidings.config import ClientSettings
from tidings.protocol import calls, codec, connect, queries, subscribing
from tidings.protocol.codec import ProtocolError
from tidings.protocol.core import EmulationIds, SessionCore, SessionState
from tidings.protocol.host import CommandHost, SubscribeOutcome
from tidings.protocol.messages import (
    UNSUPPORTED_METHODS,
    Command,
    ConnectRequest,
    HistoryRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    RpcRequest,
    SubRefreshRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)
from tidings.protocol.operations import Operation, Outcome
from tidings.protocol.subscribing import SERVER_UNSUBSCRIBE
from tidings.subscription import Subscriber

__all__ = [
    "SERVER_UNSUBSCRIBE",
    "EmulationIds",
    "Session",
    "SessionHost",
    "SessionState",
    "SubscribeOutcome",
]

log = logging.getLogger(__name__)

#: Commands that may wait behind a connect or a subscribe that is out; more close the
#: connection with 3013 (too many requests).
MAX_WAITING_COMMANDS = 100


class SessionHost(CommandHost, Protocol):
    """The node as a session sees it; every call is synchronous."""

    def admit(self, session: Session) -> DisconnectCode | None:
        """Registers an authenticated session; a code refuses it (limits)."""

    def release(self, session: Session) -> None:
        """Forgets a session that closed (after its subscriptions were removed)."""


class Session(SessionCore):
    """One client connection's protocol state: frames and time in, replies and a close
    code out (the arguments are :class:`~tidings.protocol.core.SessionCore`'s)."""

    __slots__ = ()
    # The same host, seen with admission and release, which take a Session.
    _host: SessionHost

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
        # Here only so that ``host`` must be a whole SessionHost.
        super().__init__(
            host,
            subscriber,
            settings,
            now,
            bidirectional=bidirectional,
            wall_clock=wall_clock,
            emulation=emulation,
        )

    def _admit(self) -> DisconnectCode | None:
        return self._host.admit(self)

    def _release(self) -> None:
        self._host.release(self)

    # ------------------------------------------------------------------ inputs
    def complete(self, operation: Operation, outcome: Outcome, now: float) -> None:
        """The host performed ``operation``: produces its reply (or close), then runs the
        commands that waited for it. An operation completed twice, or after the session
        closed, is ignored."""
        if not self._in_flight or operation.ticket not in self._in_flight:
            return
        self._in_flight.discard(operation.ticket)
        if self.state is SessionState.CLOSED:
            return
        calls.finish(self, operation, outcome, now)
        if self._holder == operation.ticket:
            self._holder = 0
            while self._waiting and not self._holder and self._close is None:
                self._handle(self._waiting.popleft(), now)

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
                if self._waiting is None:
                    self._waiting = deque()
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
        result = connect.connect(self, request, now)
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
        if connect.expire(self, wall):
            return
        delay = self._settings.expired_close_delay
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

    def disconnect(self, code: int) -> None:
        """Asks for the connection to be closed with ``code`` (server-initiated)."""
        self._disconnect(code)

    # ------------------------------------------------------------------ commands
    def _handle(self, command: Command, now: float) -> None:
        method = command.method
        if self.state is SessionState.CONNECTING:
            if method != "connect" or command.request is None:
                self._disconnect(DisconnectCode.BAD_REQUEST, "the first command must be connect")
                return
            assert isinstance(command.request, ConnectRequest)
            result = connect.connect(self, command.request, now, command)
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
            subscribing.subscribe(self, command, request, now)
        elif isinstance(request, UnsubscribeRequest):
            subscribing.unsubscribe(self, command, request)
        elif isinstance(request, RefreshRequest):
            connect.refresh(self, command, request, now)
        elif isinstance(request, SubRefreshRequest):
            subscribing.sub_refresh(self, command, request, now)
        elif isinstance(request, HistoryRequest):
            queries.history(self, command, request)
        elif isinstance(request, PublishRequest):
            calls.publish(self, command, request)
        elif isinstance(request, PresenceRequest | PresenceStatsRequest):
            queries.presence(self, command, request)
        elif isinstance(request, RpcRequest) and (
            self._host.proxies("rpc") or request.method.startswith(calls.NODE_METHOD_PREFIX)
        ):
            calls.rpc(self, command, request)
        elif method in UNSUPPORTED_METHODS:
            self._error(command, ErrorCode.NOT_AVAILABLE)
        else:
            self._error(command, ErrorCode.METHOD_NOT_FOUND)

    # ------------------------------------------------------------------ server API commands
    def server_subscribe(self, channel: str) -> bool:
        """Subscribes on the server's initiative (server API ``subscribe``) and tells the
        client with a ``subscribe`` push; the client cannot leave the channel by itself.

        Returns:
            False when nothing was done: not connected, already subscribed, the namespace
            is unknown, or the connection is at ``client.max_subscriptions``.
        """
        if self.state is not SessionState.CONNECTED:
            return False
        return subscribing.server_subscribe(self, channel)

    def server_unsubscribe(self, channel: str) -> bool:
        """Ends a subscription on the server's initiative and tells the client with an
        ``unsubscribe`` push (code 2000, which the SDK does not retry).

        Returns:
            False when the connection was not subscribed to ``channel``.
        """
        if self.state is not SessionState.CONNECTED:
            return False
        return subscribing.server_unsubscribe(self, channel)

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
