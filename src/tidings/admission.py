"""Admission: which authenticated sessions a node lets in, and who is connected.

The per-address rate of new connections, the node's and each user's connection limits,
and the sessions connected by user (the server commands act on a user's ones). A user's
first session and last one are handed to the callbacks given (the presence of users).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tidings.codes import DisconnectCode
from tidings.config import ClientSettings
from tidings.protocol.session import Session

__all__ = ["Admission", "ClientHandle"]


class ClientHandle(Protocol):
    """A session's connection, as a server command reaches it."""

    def pump(self) -> None:
        """Writes what the session queued and applies its close request."""

    def close(self, code: DisconnectCode, reason: str = "") -> None:
        """Closes with ``code``."""


class Admission:
    """The connections a node has admitted, counted against ``client.*`` limits.

    Args:
        limits: the ``[client]`` settings (``max_connections``,
            ``max_connections_per_user``, ``connections_per_ip_per_second``).
        monotonic: the clock of the per-address windows (whole seconds).
        arrived: called with a user whose first session this is.
        departed: called with a user whose last session has gone.
    """

    def __init__(
        self,
        limits: ClientSettings,
        monotonic: Callable[[], float],
        *,
        arrived: Callable[[str], None],
        departed: Callable[[str], None],
    ) -> None:
        self._limits = limits
        self._monotonic = monotonic
        self._arrived = arrived
        self._departed = departed
        #: Connected sessions by user ("" for anonymous ones), with their connections.
        self.sessions: dict[str, dict[Session, ClientHandle]] = {}
        self._users: dict[str, int] = {}
        self._connections = 0
        self._ip_window = 0
        self._ip_counts: dict[str, int] = {}

    @property
    def connections(self) -> int:
        """Admitted sessions."""
        return self._connections

    @property
    def users(self) -> int:
        """Distinct users of the admitted sessions (anonymous ones not counted)."""
        return len(self._users)

    def admit_ip(self, ip: str) -> bool:
        """Counts a new connection from ``ip``; False when over the per-second limit."""
        limit = self._limits.connections_per_ip_per_second
        if not limit:
            return True
        second = int(self._monotonic())
        if second != self._ip_window:
            self._ip_window = second
            self._ip_counts.clear()
        count = self._ip_counts.get(ip, 0) + 1
        self._ip_counts[ip] = count
        return count <= limit

    def admit(self, session: Session) -> DisconnectCode | None:
        """Registers ``session``; :attr:`DisconnectCode.CONNECTION_LIMIT` refuses it."""
        limits = self._limits
        if limits.max_connections and self._connections >= limits.max_connections:
            return DisconnectCode.CONNECTION_LIMIT
        per_user = limits.max_connections_per_user
        if session.user and per_user and self._users.get(session.user, 0) >= per_user:
            return DisconnectCode.CONNECTION_LIMIT
        self._connections += 1
        if session.user:
            count = self._users.get(session.user, 0)
            self._users[session.user] = count + 1
            if not count:
                self._arrived(session.user)
        self.sessions.setdefault(session.user, {})[session] = session.handle
        return None

    def release(self, session: Session) -> None:
        """Forgets an admitted ``session``."""
        sessions = self.sessions.get(session.user)
        if sessions is not None:
            sessions.pop(session, None)
            if not sessions:
                del self.sessions[session.user]
        self._connections -= 1
        if session.user:
            left = self._users.get(session.user, 1) - 1
            if left:
                self._users[session.user] = left
            elif self._users.pop(session.user, None) is not None:
                self._departed(session.user)
