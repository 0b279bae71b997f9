"""One load-generator connection: an asyncio protocol over :mod:`benchmarks.wsframe`.

A connection opens from a chosen 127.0.0.x source address, upgrades to WebSocket, runs its
target :class:`~benchmarks.adapters.Session` until subscribed, then counts every event it
receives against the run it belongs to. Counting is per connection (unique, duplicate, wasted)
while latencies go to one histogram shared by the whole process, to keep a connection small.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from typing import Any, cast

from benchmarks.adapters import Session, SessionError
from benchmarks.stats import Histogram
from benchmarks.wsframe import (
    FrameParser,
    HandshakeError,
    Opcode,
    ProtocolError,
    encode_frame,
    handshake_request,
    parse_handshake_response,
)

__all__ = ["Counters", "WsConnection", "open_connection"]

# Linux: let connect() pick the port, so a source address is not limited to one port range
# shared with bind(); the constant is missing from Python's socket module.
_IP_BIND_ADDRESS_NO_PORT = 24
_TEXT = int(Opcode.TEXT)
_BINARY = int(Opcode.BINARY)
_time_ns = time.time_ns


@dataclass
class Counters:
    """Process-wide tallies shared by every connection of a load generator."""

    run_id: str
    personal: bool
    latency: Histogram = field(default_factory=Histogram)
    received: int = 0
    #: WebSocket messages that carried the received events (a server that coalesces
    #: pushes sends fewer, each carrying several).
    messages: int = 0
    wasted: int = 0
    stale: int = 0
    dropped: int = 0
    first_ns: int = 0
    last_ns: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str) -> None:
        """Count one failure by a short reason (the first 80 characters)."""
        key = reason[:80]
        self.errors[key] = self.errors.get(key, 0) + 1


class WsConnection(asyncio.Protocol):
    """Client side of one WebSocket connection, driven by a target session."""

    def __init__(self, session: Session, host: str, counters: Counters) -> None:
        self.session = session
        self.counters = counters
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.unique = 0
        self.duplicates = 0
        self.closed = False
        #: The code of a close frame the server sent, once read.
        self.close_code: int | None = None
        #: Slow (``overload``) connections: their drops are expected, not counted.
        self.slow = False
        self._host = host
        self._transport: asyncio.Transport | None = None
        self._head = b""
        self._accept = b""
        self._parser: FrameParser | None = None
        self._last_seq: dict[int, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        request, self._accept = handshake_request(self._host, self.session.path)
        self._transport.write(request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))
        elif not self.slow:
            self.counters.dropped += 1

    def data_received(self, data: bytes) -> None:
        try:
            if self._parser is None:
                data = self._handshake(data)
                if self._parser is None:
                    return
            for opcode, payload in self._parser.feed(data):
                self._on_message(opcode, payload)
        except (HandshakeError, ProtocolError, SessionError, ValueError, KeyError) as exc:
            self._fail(f"{type(exc).__name__}: {exc}")

    def send_text(self, text: bytes) -> None:
        """Send one text message (no-op once the transport is closing)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode_frame(Opcode.TEXT, text))

    def pause(self) -> None:
        """Stop reading from the socket (a slow client): the server's queue for it grows."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume(self) -> None:
        """Read again: what the kernel buffered arrives, then any close."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def tcp_state(self) -> int | None:
        """The socket's TCP state (Linux ``tcpi_state``: 1 established, 7 closed, 8
        close-wait), or None when it cannot be read. A paused connection reads nothing, so
        this is how it learns that the server reset or closed it meanwhile."""
        if self.closed or self._transport is None:
            return None
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return None
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        except (OSError, AttributeError, TypeError, ValueError):
            return None

    def close(self) -> None:
        """Drop the TCP connection without a closing handshake (the run is over)."""
        if self._transport is not None:
            self._transport.abort()

    def _handshake(self, data: bytes) -> bytes:
        self._head += data
        used = parse_handshake_response(self._head, self._accept)
        if not used:
            return b""
        rest = self._head[used:]
        self._head = b""
        self._parser = FrameParser()
        for text in self.session.opening():
            self.send_text(text)
        self._check_ready()
        return rest

    def _on_message(self, opcode: Opcode, payload: bytes) -> None:
        if opcode in (_TEXT, _BINARY):
            events: list[dict[str, Any]] = []
            replies: list[bytes] = []
            self.session.feed(payload, events, replies)
            for reply in replies:
                self.send_text(reply)
            if events:
                self._count(events)
            self._check_ready()
        elif opcode == Opcode.PING:
            if self._transport is not None:
                self._transport.write(encode_frame(Opcode.PONG, payload))
        elif opcode == Opcode.CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close_code = code
            self._fail(f"server closed {code} {payload[2:].decode(errors='replace')}")

    def _check_ready(self) -> None:
        if self.session.ready and not self.ready.done():
            self.ready.set_result(None)

    def _count(self, events: list[dict[str, Any]]) -> None:
        # Runs once per message on every connection: the load generator's reading time is
        # part of the latency it measures, so names are bound once, outside the loop.
        c = self.counters
        now = _time_ns()
        if not c.first_ns:
            c.first_ns = now
        c.last_ns = now
        c.received += len(events)
        c.messages += 1
        run_id = c.run_id
        user = self.session.user if c.personal else None
        add_latency = c.latency.add
        last_seq = self._last_seq
        for body in events:
            if body.get("run") != run_id:
                c.stale += 1
                continue
            if user is not None and body.get("user") != user:
                c.wasted += 1
                continue
            add_latency((now - body["ts"]) / 1000.0)
            pub, seq = body["pub"], body["seq"]
            # One publisher's events reach a connection in publish order through one AMQP
            # queue, so a sequence number not above the last one seen is a duplicate (or a
            # reordering, which is as much a bug).
            if seq <= last_seq.get(pub, -1):
                self.duplicates += 1
            else:
                last_seq[pub] = seq
                self.unique += 1

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        else:
            self.counters.error(reason)
        self.close()


async def open_connection(
    session: Session, host: str, port: int, source_ip: str, counters: Counters,
    rcvbuf: int | None = None,
) -> WsConnection:
    """Open one connection from ``source_ip`` and wait until its session is subscribed.

    ``rcvbuf`` pins the socket's receive buffer (``SO_RCVBUF``, which Linux doubles and then
    no longer auto-tunes): a slow client's kernel then holds little of what it has not read,
    as a browser's would, instead of the up to 32 MB loopback auto-tuning grants here.

    Raises:
        OSError: the TCP connection failed.
        ConnectionError: the upgrade or the session failed.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((source_ip, 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _, conn = await loop.create_connection(
        lambda: WsConnection(session, f"{host}:{port}", counters), sock=sock
    )
    try:
        await conn.ready
    except BaseException:
        conn.close()
        raise
    return conn
