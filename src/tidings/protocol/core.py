"""What every part of a session shares: its state, its output and operations, and how it
answers and closes (:class:`SessionCore`).

:class:`~tidings.protocol.session.Session` builds on it, and the handlers of its commands
(:mod:`~tidings.protocol.connect`, :mod:`~tidings.protocol.subscribing`,
:mod:`~tidings.protocol.queries`, :mod:`~tidings.protocol.calls`) are plain functions of
it, so none of them depends on the session module that dispatches to them. Sans-I/O.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from tidings.clientinfo import ClientInfo
from tidings.codes import DisconnectCode, ErrorCode
from tidings.config import ClientSettings
from tidings.protocol import codec
from tidings.protocol.host import CommandHost
from tidings.protocol.messages import Command
from tidings.protocol.operations import INTERNAL, Disconnected, Operation, Outcome, Rejected
from tidings.subscription import Subscriber

__all__ = ["EmulationIds", "SessionCore", "SessionState"]

log = logging.getLogger("tidings.protocol.session")


class SessionState(IntEnum):
    """Where a session is in its life."""

    CONNECTING = 0
    CONNECTED = 1
    CLOSED = 2


@dataclass(frozen=True, slots=True)
class EmulationIds:
    """Where the commands of an emulated connection (HTTP stream, SSE) are to be posted:
    the SDK learns both from the connect result and sends them with every command."""

    #: The unguessable id of the connection's stream (a capability: never logged).
    session: str
    #: The worker holding it.
    node: str


class SessionCore(ABC):
    """One client connection's protocol state, and what its command handlers do with it.

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
        "chan_info",
        "channels",
        "client_id",
        "info",
        "server_channels",
        "state",
        "user",
    )

    def __init__(
        self,
        host: CommandHost,
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
        #: Tickets of the operations out, and the last ticket given. The containers that
        #: most sessions never use are made on first use: an idle connection is a few
        #: hundred bytes, and an empty deque alone is over 600.
        self._in_flight: set[int] | None = None
        self._tickets = 0
        #: The ticket of the connect or subscribe that later commands wait for, or 0.
        self._holder = 0
        self._waiting: deque[Command] | None = None
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
        #: Channel info of the subscriptions that have one (subscription token, proxy).
        self.chan_info: dict[str, bytes] | None = None


    # ------------------------------------------------------------------ outputs
    def take_output(self) -> list[bytes]:
        """The messages to send, in order (each one line of JSON); clears them."""
        out, self._output = self._output, []
        return out

    def take_operations(self) -> list[Operation]:
        """The operations for the host to perform, in command order; clears them."""
        out, self._operations = self._operations, []
        return out

    @property
    def handle(self) -> Any:
        """The subscriber handle given at creation (the connection's writer)."""
        return self._subscriber

    @property
    def pending(self) -> int:
        """How many operations are out (given to the host and not completed)."""
        return len(self._in_flight) if self._in_flight else 0

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
    def client_info(self) -> ClientInfo:
        """This connection as others see it in presence, join/leave and publications."""
        return ClientInfo(self.user, self.client_id, self.info)

    def client_info_on(self, channel: str) -> ClientInfo:
        """This connection as the subscribers of ``channel`` see it: with its channel info."""
        chan_info = self.chan_info.get(channel) if self.chan_info else None
        return ClientInfo(self.user, self.client_id, self.info, chan_info)

    # ------------------------------------------------------------------ lifecycle
    # The node's registry holds Sessions, so only Session can hand itself to it.
    @abstractmethod
    def _admit(self) -> DisconnectCode | None:
        """Registers the authenticated session with the node; a code refuses it."""

    @abstractmethod
    def _release(self) -> None:
        """Tells the node that a connected session closed."""

    def _established(self, now: float) -> None:
        """The node admitted the connection: it is connected, and pings start."""
        self.state = SessionState.CONNECTED
        self._next_ping = now + self._settings.ping_interval

    def closed(self) -> None:
        """The transport is gone: drop every subscription and leave the node."""
        was_connected = self.state is SessionState.CONNECTED
        self.state = SessionState.CLOSED
        self._waiting = None
        for channel in self.channels:
            self._host.unsubscribe(self._subscriber, channel)
        self.channels = set()
        self.chan_info = None
        if was_connected:
            self._release()

    def _disconnect(self, code: int, reason: str = "") -> None:
        if self._close is None:
            self._close = code
            self._close_reason = reason
        self.closed()

    # ------------------------------------------------------------------ answers
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

    def _push(self, push: dict[str, Any]) -> None:
        """Queues a push (wrapped for the SDK, bare for the push-only transports)."""
        self._output.append(codec.encode({"push": push} if self._bidirectional else push))

    def _ttl(self, expires_at: int, now: float) -> int:
        return max(1, int(expires_at - (now + self._wall_offset)))

    # ------------------------------------------------------------------ operations
    def _ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def _start(self, operation: Operation) -> None:
        if self._in_flight is None:
            self._in_flight = set()
        self._in_flight.add(operation.ticket)
        self._operations.append(operation)
        if operation.holds:
            self._holder = operation.ticket
