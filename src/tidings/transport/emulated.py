"""Emulated bidirectional connections: ``/connection/http_stream`` and ``/connection/sse``.

For clients where WebSocket is blocked (some proxies and corporate networks), the
``centrifuge`` SDK falls back to a long-lived HTTP response that carries everything the
server sends, and posts every later command to the emulation endpoint
(``transport/emulation.py``):

- ``POST /connection/http_stream``: the body is the first command frame (the connect
  command); the response (``application/json``) is a stream of protocol messages, one
  per line: replies, ``{"push":…}`` pushes and pings (``{}``).
- ``GET /connection/sse?cf_connect=<the connect frame, URL-encoded>``: the same messages,
  each the ``data`` of one server-sent event (for the SDK's ``EventSource``). The events
  carry no ``id``: the SDK recovers by re-subscribing with its positions, as over
  WebSocket, and never lets the ``EventSource`` reconnect by itself.

The protocol is the bidirectional one of ``/connection/websocket`` (same session, pings
that want a pong, error replies, recovery). The connect result also carries ``session``
(a new unguessable id) and ``node`` (this worker's id), which the SDK sends back with
each post. A session ends with a ``disconnect`` push, then the end of the response. A
connect that fails (bad token, limits, an expired token's 109) is answered in full: the
replies and the disconnect push in one short response, so the SDK sees the server's
reason rather than a broken transport.

The response is written as every long response is (``transport/stream.py``); a
publication caches its line and its event as complete HTTP chunks, so one bytes object
serves every subscriber of the transport.
"""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web

from tidings.appkeys import NODE
from tidings.codes import close_reason, reconnects
from tidings.node import Node
from tidings.protocol import codec
from tidings.protocol.eventstream import chunk, event
from tidings.protocol.handshake import Refusal
from tidings.protocol.operations import Peer
from tidings.protocol.session import Session, SessionState
from tidings.publication import ChannelEvent, Publication
from tidings.transport.connection import Framing
from tidings.transport.cors import cors_headers, preflight
from tidings.transport.emulation import EMULATION, Emulation, read_limited
from tidings.transport.gate import as_response, client_ip, refuse_early
from tidings.transport.stream import StreamConnection, serve_stream
from tidings.transport.websocket import WebSocketHost

__all__ = ["HTTP_STREAM_PATH", "SSE_PATH", "EmulatedConnection", "add_emulated_routes"]

HTTP_STREAM_PATH = "/connection/http_stream"
SSE_PATH = "/connection/sse"


class _LineFraming:
    """Messages one per line (``http_stream``), in HTTP/1.1 chunks when chunked."""

    __slots__ = ("_chunked",)

    def __init__(self, chunked: bool) -> None:
        self._chunked = chunked

    def line(self, pub: Publication) -> bytes:
        return pub.push

    def single(self, pub: Publication) -> bytes:
        return pub.push_stream_chunk if self._chunked else pub.push + b"\n"

    def batch(self, lines: list[bytes]) -> bytes:
        body = b"\n".join(lines) + b"\n"
        return chunk(body) if self._chunked else body

    def event(self, event: ChannelEvent) -> bytes:
        return event.push


class _EventFraming(_LineFraming):
    """Messages as the ``data`` of one server-sent event each (bidirectional ``sse``)."""

    __slots__ = ()

    def single(self, pub: Publication) -> bytes:
        return pub.push_sse_chunk if self._chunked else event(pub.push)

    def batch(self, lines: list[bytes]) -> bytes:
        body = b"".join([event(line) for line in lines])
        return chunk(body) if self._chunked else body


def _disconnect_push(code: int, reason: str) -> bytes:
    push = {"code": code, "reason": reason or close_reason(code), "reconnect": reconnects(code)}
    return codec.encode({"push": {"disconnect": push}})


class EmulatedConnection(StreamConnection):
    """One emulated connection: replies and pushes down a response, commands posted.

    Args:
        host: the node.
        transport: the socket of the response.
        framing: how messages look on this transport.
        kind: the transport's name (metrics).
        emulation: the registry that routes posted commands to this connection.
    """

    __slots__ = ("_emulation", "kind", "session_id")

    def __init__(
        self,
        host: WebSocketHost,
        transport: asyncio.Transport,
        framing: Framing,
        *,
        kind: str,
        emulation: Emulation,
        peer: Peer | None = None,
    ) -> None:
        super().__init__(host, transport, framing, host.settings.client.max_queue_bytes, peer)
        self.host: WebSocketHost = host
        self.kind = kind
        self.session_id = ""
        self._emulation = emulation

    def receive(self, data: bytes) -> None:
        """A posted command frame: processed as if it had come on a WebSocket."""
        session = self.session
        if session is None or self.closing:
            return
        session.receive(data, self.host.monotonic())
        self.pump()

    def _farewell(self, code: int, reason: str) -> bytes:
        return _disconnect_push(code, reason)

    def finished(self) -> None:
        self._emulation.unregister(self.session_id)
        super().finished()


def _headers(sse: bool, cors: dict[str, str]) -> dict[str, str]:
    return {
        **cors,
        hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8"
        if sse
        else "application/json; charset=utf-8",
        hdrs.CACHE_CONTROL: "no-cache",
        "X-Accel-Buffering": "no",
    }


async def _connect_frame(request: web.Request, sse: bool) -> bytes | Refusal:
    """The first command frame: the POST body, or the ``cf_connect`` query parameter."""
    limit = request.app[NODE].settings.client.max_frame_bytes
    too_large = Refusal(413, f"connect frame over {limit} bytes (client.max_frame_bytes)")
    if not sse:
        body = await read_limited(request, limit)
        return too_large if body is None else body
    frame = request.query.get("cf_connect", "").encode()
    if not frame:
        return Refusal(400, "cf_connect query parameter (the connect command) is missing")
    return too_large if len(frame) > limit else frame


async def _serve(request: web.Request, *, sse: bool) -> web.StreamResponse:
    node: Node = request.app[NODE]
    early = refuse_early(request, node)
    if early is not None:
        return early
    cors = cors_headers(request)
    frame = await _connect_frame(request, sse)
    if isinstance(frame, Refusal):
        refused = as_response(frame)
        refused.headers.update(cors)
        return refused
    transport = request.transport
    if transport is None:  # the client left already
        return web.Response(status=400)
    chunked = request.version >= (1, 1)
    framing = _EventFraming(chunked) if sse else _LineFraming(chunked)
    emulation = request.app[EMULATION]
    kind = "sse_bidirectional" if sse else "http_stream"
    peer = Peer.of(kind, client_ip(request), request.headers, node.settings.proxy.http_headers)
    conn = EmulatedConnection(
        node, transport, framing, kind=kind, emulation=emulation, peer=peer
    )
    ids = emulation.register(conn)
    conn.session_id = ids.session
    now = node.monotonic()
    session = Session(
        node, conn, node.settings.client, now, wall_clock=node.clock(), emulation=ids
    )
    conn.session = session
    session.receive(frame, now)
    # A connect the backend decides (the connect proxy) is decided before the response
    # starts, as every other connect is.
    while operations := session.take_operations():
        for operation in operations:
            outcome = await node.perform(operation, peer)
            session.complete(operation, outcome, node.monotonic())
    if session.state is not SessionState.CONNECTED:
        # Refused, or answered with an error: the whole answer in one response.
        lines = session.take_output()
        if session.close_code is not None:
            lines.append(_disconnect_push(session.close_code, session.close_reason))
        conn.finished()
        plain = _EventFraming(False) if sse else _LineFraming(False)
        return web.Response(body=plain.batch(lines), headers=_headers(sse, cors))
    conn.send(session.take_output())  # written once the headers are out
    response = web.StreamResponse(headers=_headers(sse, cors))
    return await serve_stream(request, node, conn, response, chunked=chunked)


async def handle_http_stream(request: web.Request) -> web.StreamResponse:
    """``POST /connection/http_stream``: the connect frame is the body."""
    return await _serve(request, sse=False)


async def handle_sse(request: web.Request) -> web.StreamResponse:
    """``GET /connection/sse?cf_connect=…``: the connect frame is the query parameter."""
    return await _serve(request, sse=True)


def add_emulated_routes(app: web.Application) -> None:
    """Registers both emulated endpoints and their CORS preflights."""
    router = app.router
    router.add_post(HTTP_STREAM_PATH, handle_http_stream)
    router.add_route(
        hdrs.METH_OPTIONS, HTTP_STREAM_PATH, preflight("POST, OPTIONS", "Content-Type")
    )
    router.add_get(SSE_PATH, handle_sse, allow_head=False)
    router.add_route(hdrs.METH_OPTIONS, SSE_PATH, preflight("GET, OPTIONS", "Last-Event-ID"))
