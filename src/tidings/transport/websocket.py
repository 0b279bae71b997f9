"""WebSocket transports: bidirectional (the SDK's) and push-only (a bare browser WebSocket).

aiohttp performs the upgrade and reads frames; writes bypass its writer and go straight to
the socket as pre-built frames, which is what lets one encoded publication serve every
subscriber. Compression is never negotiated, so frames are plain and shareable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from tidings.appkeys import NODE
from tidings.codes import DisconnectCode
from tidings.node import Node
from tidings.protocol.codec import ProtocolError, decode_connect_request
from tidings.protocol.session import Session
from tidings.publication import Publication, websocket_text_frame
from tidings.transport.connection import Connection
from tidings.transport.gate import refuse_early

__all__ = ["handle_uni_websocket", "handle_websocket"]

log = logging.getLogger(__name__)
_CLOSE_GRACE = 2.0


class WebSocketConnection(Connection):
    """A bidirectional connection: pushes wrapped as ``{"push":…}``, newline-joined."""

    __slots__ = ("ws",)

    kind = "websocket"

    def __init__(self, node: Node, transport: asyncio.Transport, ws: web.WebSocketResponse) -> None:
        super().__init__(node, transport)
        self.ws = ws

    def _line(self, pub: Publication) -> bytes:
        return pub.push

    def _single_frame(self, pub: Publication) -> bytes:
        return pub.push_frame

    def _frame(self, lines: list[bytes]) -> bytes:
        return websocket_text_frame(b"\n".join(lines))

    def _close_transport(self, code: DisconnectCode, reason: str) -> None:
        asyncio.get_running_loop().create_task(self._close_ws(code, reason))

    async def _close_ws(self, code: DisconnectCode, reason: str) -> None:
        # A slow client may never read the close frame; abort after a grace period so its
        # buffered bytes are freed either way.
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(
                self.ws.close(code=int(code), message=reason.encode()), _CLOSE_GRACE
            )
        if self.transport.get_write_buffer_size() or not self.transport.is_closing():
            self.transport.abort()


class UniWebSocketConnection(WebSocketConnection):
    """A push-only connection: each push is a bare ``{"channel":…,"pub":…}``."""

    __slots__ = ()

    kind = "uni_websocket"

    def _line(self, pub: Publication) -> bytes:
        return pub.uni

    def _single_frame(self, pub: Publication) -> bytes:
        return pub.uni_frame


async def _serve(request: web.Request, *, bidirectional: bool) -> web.StreamResponse:
    node: Node = request.app[NODE]
    early = refuse_early(request, node)
    if early is not None:
        return early
    settings = node.settings.client
    ws = web.WebSocketResponse(
        autoping=True,
        heartbeat=None,
        compress=False,
        max_msg_size=settings.max_frame_bytes,
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the peer left during the upgrade
        return ws
    cls = WebSocketConnection if bidirectional else UniWebSocketConnection
    conn = cls(node, transport, ws)
    now = node.monotonic()
    session = Session(
        node, conn, settings, now, bidirectional=bidirectional, wall_clock=node.clock()
    )
    conn.session = session
    gauge = node.metrics.connections.labels(conn.kind)
    gauge.inc()
    node.live.add(conn)
    try:
        if not bidirectional:
            query_connect = request.query.get("cf_connect")
            if query_connect is not None:
                _uni_connect(conn, session, query_connect)
        node.timers.schedule(conn, session.deadline)
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                if conn.closing:
                    continue
                if bidirectional:
                    session.receive(msg.data, node.monotonic())
                elif session.client_id == "":
                    _uni_connect(conn, session, msg.data)
                    continue
                # Anything a push-only client sends after connecting is ignored.
                conn.pump()
            elif msg.type is WSMsgType.ERROR:
                # aiohttp has closed the socket already (1009 for an oversized frame).
                log.info("websocket error: %s", ws.exception())
                node.metrics.disconnects.labels(str(ws.close_code or 1006)).inc()
                break
    finally:
        conn.finished()
        node.live.discard(conn)
        gauge.dec()
    return ws


def _uni_connect(conn: WebSocketConnection, session: Session, raw: str | bytes) -> None:
    try:
        body: Any = orjson.loads(raw)
        request = decode_connect_request(body)
    except (orjson.JSONDecodeError, ProtocolError):
        conn.close(DisconnectCode.BAD_REQUEST)
        return
    session.connect_unidirectional(request, conn.node.monotonic())
    conn.pump()


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    """``/connection/websocket``: the Centrifugo-compatible bidirectional protocol."""
    return await _serve(request, bidirectional=True)


async def handle_uni_websocket(request: web.Request) -> web.StreamResponse:
    """``/connection/uni_websocket``: pushes only; the connect request is the first message
    (or the ``cf_connect`` query parameter)."""
    return await _serve(request, bidirectional=False)
