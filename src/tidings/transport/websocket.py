"""WebSocket transports: bidirectional (the SDK's) and push-only (a bare browser WebSocket).

Once the handshake is answered, the connection object *is* the socket's asyncio protocol:
it reads client frames with the sans-I/O :class:`~tidings.protocol.wsframes.FrameReader`
and writes pre-built frames straight to the transport, which is what lets one encoded
publication serve every subscriber. Nothing of aiohttp stays behind per connection (its
request handler, parser, request, task and WebSocket objects cost ~9 KB per idle
connection). Compression is never negotiated, so frames are plain and shareable.

The handshake is answered in one of two places, with the same checks and answers:

- the front (``transport/front.py``), for a connection whose first request is the upgrade:
  the usual case, and the only one for browsers, which open a fresh connection for every
  WebSocket;
- the aiohttp routes registered here, for an upgrade sent on a kept-alive connection that
  aiohttp already serves (clients that pool connections, such as aiohttp's own
  ``ClientSession``, do this). The route takes the socket over from aiohttp
  (:func:`_take_over`) and hands it to the same connection class.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from tidings.appkeys import NODE
from tidings.codes import DisconnectCode
from tidings.config import Settings
from tidings.node import Closable, Node
from tidings.protocol.codec import ProtocolError, decode_connect_request
from tidings.protocol.handshake import (
    Refusal,
    check_upgrade,
    refused_subprotocol,
    switching_protocols,
)
from tidings.protocol.operations import Peer
from tidings.protocol.session import Session, SessionHost
from tidings.protocol.wsframes import (
    Close,
    Failure,
    FrameReader,
    Message,
    Opcode,
    Ping,
    close_frame,
    encode_frame,
)
from tidings.publication import ChannelEvent, Publication
from tidings.transport.connection import Connection, WriterHost
from tidings.transport.gate import as_response, peer_ip, refuse_early

__all__ = [
    "BIDIRECTIONAL_PATH",
    "UNIDIRECTIONAL_PATH",
    "UniWebSocketConnection",
    "WebSocketConnection",
    "WebSocketHost",
    "add_websocket_routes",
    "is_websocket_path",
    "open_websocket",
]

log = logging.getLogger(__name__)

BIDIRECTIONAL_PATH = "/connection/websocket"
UNIDIRECTIONAL_PATH = "/connection/uni_websocket"
#: Looked up once: reading an enum member costs ~60 ns on Python 3.11, and this is per flush.
_TEXT = Opcode.TEXT
#: Seconds a closing connection waits for the client's close frame (and for its unsent
#: bytes to drain) before the socket is aborted.
_CLOSE_GRACE = 2.0


class WebSocketHost(WriterHost, SessionHost, Protocol):
    """What a WebSocket connection needs of its node: the writer's and the session's host,
    the client settings, the clocks, and the set of live connections a shutdown closes."""

    settings: Settings

    def clock(self) -> float:
        """Wall-clock seconds (token times)."""

    def monotonic(self) -> float:
        """Monotonic seconds (deadlines)."""

    def join(self, conn: Closable) -> None:
        """``conn`` is open: a shutdown closes it."""

    def leave(self, conn: Closable) -> None:
        """``conn`` has ended."""


class _PushFraming:
    """Bidirectional pushes, ``{"push":…}``, newline-joined in one text frame.

    The last batch framed is kept: the flusher writes the subscribers of a broadcast one
    after the other, each with the same lines queued, and they then share one frame
    instead of each joining and copying its own.
    """

    __slots__ = ("_last_frame", "_last_lines")

    def __init__(self) -> None:
        self._last_lines: list[bytes] = []
        self._last_frame = encode_frame(_TEXT, b"")

    def line(self, pub: Publication) -> bytes:
        return pub.push

    def single(self, pub: Publication) -> bytes:
        return pub.push_frame

    def batch(self, lines: list[bytes]) -> bytes:
        # List equality tests identity first: the same publications' lines compare in
        # one pointer check each, different ones mostly fail at the first.
        if lines == self._last_lines:
            return self._last_frame
        frame = encode_frame(_TEXT, b"\n".join(lines))
        self._last_lines = lines
        self._last_frame = frame
        return frame

    def event(self, event: ChannelEvent) -> bytes:
        return event.push


class _UniFraming(_PushFraming):
    """Push-only pushes, bare ``{"channel":…,"pub":…}``, newline-joined in one text frame."""

    __slots__ = ()

    def line(self, pub: Publication) -> bytes:
        return pub.uni

    def single(self, pub: Publication) -> bytes:
        return pub.uni_frame

    def event(self, event: ChannelEvent) -> bytes:
        return event.uni


class WebSocketConnection(Connection, asyncio.Protocol):
    """A bidirectional connection: pushes wrapped as ``{"push":…}``, newline-joined.

    It is the asyncio protocol of its socket from the end of the handshake on.
    """

    __slots__ = ("_closer", "_reader")

    kind = "websocket"
    bidirectional = True
    framing = _PushFraming()

    def __init__(
        self, host: WebSocketHost, transport: asyncio.Transport, peer: Peer | None = None
    ) -> None:
        client = host.settings.client
        super().__init__(host, transport, self.framing, client.max_queue_bytes, peer)
        self.host: WebSocketHost = host
        self._reader = FrameReader(client.max_frame_bytes)
        # Armed by a close: aborts the socket if the client has not finished by then.
        self._closer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, tail: bytes, query_connect: str | None) -> None:
        """Starts the session on the upgraded socket, whose protocol this now is.

        Args:
            tail: bytes the client sent after the handshake, already read.
            query_connect: the ``cf_connect`` query parameter, if any (push-only: the
                connect request, so that the first message need not carry it).
        """
        node = self.host
        now = node.monotonic()
        session = Session(
            node,
            self,
            node.settings.client,
            now,
            bidirectional=self.bidirectional,
            wall_clock=node.clock(),
        )
        self.session = session
        node.metrics.connections.labels(self.kind).inc()
        node.join(self)
        if query_connect is not None:
            self._on_message(query_connect.encode())
        if not self.closing:
            node.timers.schedule(self, session.deadline)
        if tail:
            self.data_received(tail)

    def data_received(self, data: bytes) -> None:
        for event in self._reader.feed(data):
            if isinstance(event, Message):
                if not self.closing:
                    self._on_message(event.data)
            elif isinstance(event, Ping):
                if not self.closing:
                    self.transport.write(encode_frame(Opcode.PONG, event.payload))
                    self._check_backlog()
            elif isinstance(event, Close):
                self._on_close(event)
            elif isinstance(event, Failure):
                self._on_failure(event)
            # A pong needs nothing: liveness is the protocol's own ping ({}), answered in text.

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        self.finished()
        node = self.host
        node.leave(self)
        node.metrics.connections.labels(self.kind).dec()

    # ------------------------------------------------------------------ reading
    def _on_message(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        session.receive(data, self.host.monotonic())
        self.pump()

    def _on_close(self, event: Close) -> None:
        if self.closing:
            # The client answered our close frame: the closing handshake is complete.
            self.transport.close()
            return
        # The client closes first: answer with its code (RFC 6455 §5.5.1) and hang up.
        self._stop()
        self._send_close(event.code, "")
        self.transport.close()

    def _on_failure(self, failure: Failure) -> None:
        client = self.session.client_id if self.session is not None else ""
        log.info(
            "client %s broke the WebSocket protocol (%d): %s",
            client or "-",
            failure.code,
            failure.reason,
        )
        if self.closing:
            self.transport.close()
            return
        self._stop()
        self.host.metrics.disconnects.labels(str(int(failure.code))).inc()
        if self.session is not None:
            self.session.closed()
        self._send_close(int(failure.code), failure.reason)

    # ------------------------------------------------------------------ closing
    def _close_transport(self, code: int, reason: str) -> None:
        self._send_close(code, reason)

    def _send_close(self, code: int | None, reason: str) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(close_frame(code, reason))
        # A slow client may never read the close frame; give up after a grace period so
        # that its buffered bytes are freed either way.
        self._closer = asyncio.get_running_loop().call_later(_CLOSE_GRACE, self._give_up)

    def _give_up(self) -> None:
        # No closing handshake within the grace: reset. A FIN would wait behind whatever
        # the kernel still holds for a client that stopped reading, for minutes.
        self._closer = None
        self.transport.abort()


class UniWebSocketConnection(WebSocketConnection):
    """A push-only connection: each push is a bare ``{"channel":…,"pub":…}``.

    The connect request is the first message (or the ``cf_connect`` query parameter);
    anything the client sends after it is ignored.
    """

    __slots__ = ()

    kind = "uni_websocket"
    bidirectional = False
    framing = _UniFraming()

    def _on_message(self, data: bytes) -> None:
        session = self.session
        if session is None or session.client_id:
            return
        try:
            body: Any = orjson.loads(data)
            request = decode_connect_request(body)
        except (orjson.JSONDecodeError, ProtocolError):
            self.close(DisconnectCode.BAD_REQUEST)
            return
        session.connect_unidirectional(request, self.host.monotonic())
        self.pump()


_CLASSES: dict[str, type[WebSocketConnection]] = {
    BIDIRECTIONAL_PATH: WebSocketConnection,
    UNIDIRECTIONAL_PATH: UniWebSocketConnection,
}


def is_websocket_path(path: str) -> bool:
    """Whether ``path`` is one of the WebSocket endpoints."""
    return path in _CLASSES


def open_websocket(
    node: WebSocketHost,
    transport: asyncio.Transport,
    accept: str,
    path: str,
    raw_query: str,
    tail: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> WebSocketConnection:
    """Completes a checked handshake and makes the connection the socket's protocol.

    Args:
        node: the node the connection joins.
        transport: the socket, with the request head read and nothing answered yet.
        accept: the ``Sec-WebSocket-Accept`` value from ``check_upgrade``.
        path: a WebSocket endpoint (:func:`is_websocket_path`).
        raw_query: the request's query string, still percent-encoded.
        tail: bytes the client sent after the request head.
        headers: the request's headers, lower-case names (those of ``proxy.http_headers``
            are kept for the backend).
    """
    transport.write(switching_protocols(accept))
    cls = _CLASSES[path]
    allowed = node.settings.proxy.http_headers
    peer = Peer.of(cls.kind, peer_ip(transport), headers or {}, allowed)
    conn = cls(node, transport, peer)
    transport.set_protocol(conn)
    refused = refused_subprotocol(headers or {})
    if refused is not None:
        # Closed in the protocol (a close frame with 3501), which the SDKs report as final;
        # the client's frames are never read.
        conn.start(b"", None)
        conn.close(DisconnectCode.BAD_REQUEST, refused)
        return conn
    connect = None
    if path == UNIDIRECTIONAL_PATH:
        connect = next((v for k, v in parse_qsl(raw_query) if k == "cf_connect"), None)
    conn.start(tail, connect)
    return conn


# ---------------------------------------------------------------------- through aiohttp
class _Tail:
    """Collects what aiohttp read after the upgrade head (aiohttp's payload-parser shape)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.data += data
        return False, b""

    def feed_eof(self) -> None:
        pass


def _take_over(request: web.Request) -> tuple[asyncio.Transport, bytes] | None:
    """Detaches the request's socket from aiohttp; returns it and the bytes after the head.

    Relies on three things aiohttp does with an upgraded request, as its own WebSocket
    support uses them: ``set_parser`` hands over the bytes read past the head; with its
    ``transport`` cleared, the request handler neither writes to nor closes the socket
    (the response returned afterwards fails to send and is dropped as a client that left);
    ``connection_lost`` makes its server forget the handler. Pinned by
    ``tests/transport/test_front.py`` (an upgrade on a kept-alive connection).
    """
    handler = request.protocol
    transport = request.transport
    if transport is None or transport.is_closing():
        return None
    tail = _Tail()
    handler.set_parser(cast(Any, tail))
    handler.transport = None
    handler.connection_lost(None)
    if not transport.is_reading():  # aiohttp pauses reading when its buffers fill up
        transport.resume_reading()
    return transport, tail.data


async def _upgrade(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE]
    early = refuse_early(request, node)
    if early is not None:
        return early
    headers = {name.lower(): ", ".join(request.headers.getall(name)) for name in request.headers}
    checked = check_upgrade(request.method, (request.version.major, request.version.minor), headers)
    if isinstance(checked, Refusal):
        return as_response(checked)
    taken = _take_over(request)
    if taken is not None:
        transport, tail = taken
        open_websocket(
            node,
            transport,
            checked,
            request.path,
            request.rel_url.raw_query_string,
            tail,
            headers,
        )
    # aiohttp no longer owns the socket: this response is never sent.
    return web.Response(status=101)


def add_websocket_routes(app: web.Application) -> None:
    """Registers both WebSocket endpoints with aiohttp, for upgrades that reach it."""
    for path in _CLASSES:
        app.router.add_get(path, _upgrade, allow_head=False)
