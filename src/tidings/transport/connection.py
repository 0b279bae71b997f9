"""The per-connection writer shared by every transport.

Pushes and replies are queued as encoded lines and written in one system call per batch:
a single pending push goes out as its shared, pre-built frame (the same bytes object for
every subscriber); several are joined into one frame. A connection whose socket buffer
grows past ``max_queue_bytes`` is cut with 3008 (slow) and its queue is dropped, so one
slow browser never holds memory without bound or slows the others.
"""

from __future__ import annotations

import abc
import asyncio
import logging

from tidings.codes import DisconnectCode
from tidings.node import Node
from tidings.protocol.session import Session
from tidings.publication import Publication

__all__ = ["Connection"]

log = logging.getLogger(__name__)


class Connection(abc.ABC):
    """One client socket: queues bytes, writes them, closes with a code."""

    __slots__ = ("_limit", "_pending", "_single", "closing", "node", "session", "transport")

    kind = "?"

    def __init__(self, node: Node, transport: asyncio.Transport) -> None:
        self.node = node
        self.transport = transport
        self.session: Session | None = None
        self._pending: list[bytes] = []
        self._single: bytes | None = None
        self._limit = node.settings.client.max_queue_bytes
        self.closing = False

    # ------------------------------------------------------------------ encoding hooks
    @abc.abstractmethod
    def _line(self, pub: Publication) -> bytes:
        """The push message of ``pub`` for this transport."""

    @abc.abstractmethod
    def _single_frame(self, pub: Publication) -> bytes:
        """``pub`` alone, ready for the socket (shared by every subscriber)."""

    @abc.abstractmethod
    def _frame(self, lines: list[bytes]) -> bytes:
        """Several lines as bytes for the socket."""

    @abc.abstractmethod
    def _close_transport(self, code: DisconnectCode, reason: str) -> None:
        """Tells the client ``code`` and ``reason`` the transport's way and closes the socket."""

    # ------------------------------------------------------------------ hub side
    def deliver(self, pub: Publication) -> None:
        """Queues ``pub``; the node flushes it at the end of the batch."""
        if self.closing:
            return
        if not self._pending:
            self.node.mark_dirty(self)
            self._single = self._single_frame(pub)
        else:
            self._single = None
        self._pending.append(self._line(pub))

    def flush(self) -> None:
        """Writes everything queued in one write."""
        pending = self._pending
        if not pending or self.closing:
            return
        single = self._single
        data = single if single is not None and len(pending) == 1 else self._frame(pending)
        self._pending = []
        self._single = None
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(data)
        self._check_backlog()

    def _check_backlog(self) -> None:
        """Cuts the client (3008) when its unsent bytes pass ``max_queue_bytes``."""
        unsent = self.transport.get_write_buffer_size()
        if unsent > self._limit:
            self.node.metrics.slow_disconnects.inc()
            log.info(
                "client %s is too slow (%d bytes unsent); disconnecting",
                self.session.client_id if self.session else "-",
                unsent,
            )
            self.close(DisconnectCode.SLOW, "client.max_queue_bytes exceeded")

    # ------------------------------------------------------------------ session side
    def send(self, lines: list[bytes]) -> None:
        """Queues the session's replies after whatever is pending and writes now."""
        if not lines or self.closing:
            return
        if not self._pending:
            self.node.mark_dirty(self)
        self._pending.extend(lines)
        self._single = None
        self.flush()

    def pump(self) -> None:
        """Writes the session's output and applies its close request, if any."""
        session = self.session
        if session is None:
            return
        self.send(session.take_output())
        code = session.close_code
        if code is not None and not self.closing:
            self.close(code, session.close_reason)
        else:
            self.node.timers.schedule(self, session.deadline)

    def on_timer(self, now: float) -> float:
        """Runs the session's timers; returns its next deadline."""
        session = self.session
        if session is None or self.closing:
            return float("inf")
        session.tick(now)
        self.send(session.take_output())
        if session.close_code is not None:
            self.close(session.close_code, session.close_reason)
            return float("inf")
        return session.deadline

    def close(self, code: DisconnectCode, reason: str = "") -> None:
        """Closes with ``code``: drops the queue, ends the session, tells the client.

        ``reason`` is plain text (never JSON: the SDK would read it as legacy advice)."""
        if self.closing:
            return
        self._stop()
        self.node.metrics.disconnects.labels(str(int(code))).inc()
        if self.session is not None:
            self.session.disconnect(code)
        self._close_transport(code, (reason or code.reason)[:120])

    def _stop(self) -> None:
        """Stops writing and timing: the start of every close."""
        self.closing = True
        self._pending = []
        self._single = None
        self.node.timers.cancel(self)

    def finished(self) -> None:
        """The socket is gone: release the session and the timers."""
        self._stop()
        if self.session is not None:
            self.session.closed()
            # The timer heap may hold this object until its old deadline; let the session
            # and its state go now.
            self.session = None
