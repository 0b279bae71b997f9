"""The per-connection writer shared by every transport, and what it needs of its host.

Pushes and replies are queued as encoded lines and written in one system call per batch:
a single pending push goes out as its shared, pre-built frame (the same bytes object for
every subscriber); several are joined into one frame. How a push looks on the wire is the
transport's :class:`Framing`, given to the writer when the connection is made, so a
delivery goes forward only: hub -> :meth:`Connection.deliver` -> the host's flusher, once
per loop turn -> :meth:`Connection.flush` -> the socket. A connection whose socket buffer
grows past ``max_queue_bytes`` is cut with 3008 (slow) and its queue is dropped, so one
slow browser never holds memory without bound or slows the others.

The writer depends on :class:`WriterHost`, not on the node, so unit tests run it with an
in-memory transport and a host of their own. It also runs the operations its session hands
over (backend calls): one task each, cancelled when the connection ends; each outcome goes
back to the session and whatever that produces is written at once.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Protocol

from tidings.codes import DisconnectCode, close_reason
from tidings.flusher import Flusher
from tidings.metrics import Metrics
from tidings.protocol.operations import INTERNAL, Operation, Outcome, Peer
from tidings.protocol.session import Session
from tidings.publication import ChannelEvent, Publication
from tidings.timers import TimerQueue

__all__ = ["Connection", "Framing", "WriterHost"]

log = logging.getLogger(__name__)


class WriterHost(Protocol):
    """What a connection's writer needs of the process it runs in (the node, in service)."""

    #: Writes the connections that queued bytes, once per loop turn.
    flusher: Flusher
    #: Runs the session's deadlines (pings, expiries).
    timers: TimerQueue
    #: Counts disconnects and slow-client cuts.
    metrics: Metrics

    def monotonic(self) -> float:
        """The clock the sessions' timers run on."""

    async def perform(self, operation: Operation, peer: Peer) -> Outcome:
        """Performs what a session handed over; never raises (a failure is an outcome)."""


class Framing(Protocol):
    """How one transport puts pushes on its wire; shared by its connections."""

    def line(self, pub: Publication) -> bytes:
        """The push message of ``pub``, as one line of a batch."""

    def single(self, pub: Publication) -> bytes:
        """``pub`` alone, ready for the socket (shared by every subscriber)."""

    def batch(self, lines: list[bytes]) -> bytes:
        """Several lines as bytes for the socket."""

    def event(self, event: ChannelEvent) -> bytes:
        """The push message of a join/leave ``event``, as one line of a batch."""


class Connection(abc.ABC):
    """One client socket: queues bytes, writes them, closes with a code.

    Args:
        host: the node, or a test's twin of it.
        transport: the socket.
        framing: the transport's wire format for pushes.
        max_queue_bytes: unsent bytes past which the client is cut with 3008.
    """

    __slots__ = (
        "_framing",
        "_limit",
        "_over",
        "_pending",
        "_single",
        "_tasks",
        "closing",
        "host",
        "peer",
        "session",
        "transport",
    )

    kind = "?"

    def __init__(
        self,
        host: WriterHost,
        transport: asyncio.Transport,
        framing: Framing,
        max_queue_bytes: int,
        peer: Peer | None = None,
    ) -> None:
        self.host = host
        #: The client as the backend is told of it (transport, address, allowed headers).
        self.peer = peer or Peer(self.kind)
        #: Backend calls under way; made at the first (an empty set is 216 bytes, and most
        #: connections never make one).
        self._tasks: set[asyncio.Task[None]] | None = None
        self.transport = transport
        self.session: Session | None = None
        self._framing = framing
        self._pending: list[bytes] = []
        self._single: bytes | None = None
        self._limit = max_queue_bytes
        #: The size of a write that took a client that kept up past the limit (see flush).
        self._over = 0
        self.closing = False

    @abc.abstractmethod
    def _close_transport(self, code: int, reason: str) -> None:
        """Tells the client ``code`` and ``reason`` the transport's way and closes the socket."""

    # ------------------------------------------------------------------ hub side
    def deliver(self, pub: Publication) -> None:
        """Queues ``pub``; the host's flusher writes it at the end of the loop turn."""
        if self.closing:
            return
        framing = self._framing
        if not self._pending:
            self.host.flusher.mark_dirty(self)
            self._single = framing.single(pub)
        else:
            self._single = None
        self._pending.append(framing.line(pub))

    def deliver_event(self, event: ChannelEvent) -> None:
        """Queues a join/leave push; the host's flusher writes it at the end of the loop turn."""
        if self.closing:
            return
        if not self._pending:
            self.host.flusher.mark_dirty(self)
        self._single = None
        self._pending.append(self._framing.event(event))

    def flush(self) -> None:
        """Writes everything queued in one write."""
        pending = self._pending
        if not pending or self.closing:
            return
        single = self._single
        data = single if single is not None and len(pending) == 1 else self._framing.batch(pending)
        self._pending = []
        self._single = None
        transport = self.transport
        if transport.is_closing():
            return
        kept_up = transport.get_write_buffer_size() <= self._limit
        transport.write(data)
        if kept_up:
            # One write to a client that kept up may pass the limit (a subscribe reply with
            # 10,000 recovered publications is ~1 MB): its size is allowed on top of the
            # limit until the client is back within the limit, so live pushes meanwhile
            # keep the usual room; a client that does not drain is cut all the same.
            past = transport.get_write_buffer_size() > self._limit
            self._over = len(data) if past else 0
        self._check_backlog()

    def _check_backlog(self) -> None:
        """Cuts the client (3008) when its unsent bytes pass ``max_queue_bytes`` (and what
        one write made while it kept up took it past)."""
        unsent = self.transport.get_write_buffer_size()
        if unsent > self._limit + self._over:
            self.host.metrics.slow_disconnects.inc()
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
        self._pending.extend(lines)
        self._single = None
        self.flush()

    def pump(self) -> None:
        """Writes the session's output and applies its close request, if any."""
        session = self.session
        if session is None:
            return
        self.send(session.take_output())
        self._perform(session)
        code = session.close_code
        if code is not None and not self.closing:
            self.close(code, session.close_reason)
        else:
            self.host.timers.schedule(self, session.deadline)

    def on_timer(self, now: float) -> float:
        """Runs the session's timers; returns its next deadline."""
        session = self.session
        if session is None or self.closing:
            return float("inf")
        session.tick(now)
        self.send(session.take_output())
        self._perform(session)
        if session.close_code is not None:
            self.close(session.close_code, session.close_reason)
            return float("inf")
        return session.deadline

    def _perform(self, session: Session) -> None:
        """Starts the operations the session handed over."""
        for operation in session.take_operations():
            task = asyncio.get_running_loop().create_task(self._complete(session, operation))
            if self._tasks is None:
                self._tasks = set()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _complete(self, session: Session, operation: Operation) -> None:
        try:
            outcome = await self.host.perform(operation, self.peer)
        except Exception:
            # A bug of the host's must not leave the session waiting forever.
            log.exception("performing %s failed", type(operation).__name__)
            outcome = INTERNAL
        if self.session is not session or self.closing:
            return
        session.complete(operation, outcome, self.host.monotonic())
        self.pump()

    def close(self, code: int, reason: str = "") -> None:
        """Closes with ``code`` (tidings' own or a backend's): drops the queue, ends the
        session, tells the client.

        ``reason`` is plain text (never JSON: the SDK would read it as legacy advice)."""
        if self.closing:
            return
        self._stop()
        self.host.metrics.disconnects.labels(str(int(code))).inc()
        if self.session is not None:
            self.session.disconnect(code)
        self._close_transport(code, (reason or close_reason(code))[:120])

    def _stop(self) -> None:
        """Stops writing and timing: the start of every close."""
        self.closing = True
        self._pending = []
        self._single = None
        self.host.timers.cancel(self)
        # Backend calls of a connection that is gone are not waited for.
        if self._tasks:
            current = asyncio.current_task()
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()

    def finished(self) -> None:
        """The socket is gone: release the session and the timers."""
        self._stop()
        if self.session is not None:
            self.session.closed()
            # The timer heap may hold this object until its old deadline; let the session
            # and its state go now.
            self.session = None
