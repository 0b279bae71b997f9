"""The front: every accepted socket starts here, until its first request says what it is.

A WebSocket upgrade (``GET /connection/websocket`` or ``/connection/uni_websocket``) is
answered here: the pre-accept checks of ``transport/gate.py``, the handshake of
``protocol/handshake.py``, then the socket becomes a lean WebSocket connection
(``transport/websocket.py``) with nothing of aiohttp ever created for it. Any other
request is handed, with the bytes read so far, to aiohttp's own protocol (``web.Server``,
the factory aiohttp's sites listen with), which serves that connection as if it had
accepted it: keep-alive, pipelining, event streams, the API.

Only what the decision needs is buffered: the request line, and for an upgrade the rest of
its head (at most :data:`MAX_HEAD_BYTES`, else 431). A request line that cannot be an
upgrade goes to aiohttp at once, so every other request meets aiohttp's parser, limits and
answers exactly as before.

Shutdown order (``server.py``): close the server :func:`start_site` returns (stop
accepting), then ``runner.cleanup()`` (ask every client to go, wait, clean up).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable
from typing import cast

from aiohttp import web

from tidings.appkeys import NODE
from tidings.node import Node
from tidings.protocol.handshake import (
    HeadError,
    Refusal,
    check_upgrade,
    parse_head,
    parse_request_line,
)
from tidings.transport.gate import peer_ip, refusal
from tidings.transport.websocket import is_websocket_path, open_websocket

__all__ = ["HEAD_TIMEOUT", "MAX_HEAD_BYTES", "FrontProtocol", "start_site"]

#: The largest upgrade request head read (aiohttp's own limit is 8 KiB per line).
MAX_HEAD_BYTES = 16 * 1024
#: Seconds a new connection may take to send its request line (or, for an upgrade, its
#: whole head) before it is closed.
HEAD_TIMEOUT = 60.0
_BLANK_LINE = re.compile(rb"\n\r?\n")


class FrontProtocol(asyncio.Protocol):
    """The protocol of a new connection until it is handed to a WebSocket or to aiohttp.

    Args:
        node: the node whose gate and settings apply.
        http: aiohttp's protocol factory (``runner.server``).
    """

    __slots__ = ("_buffer", "_http", "_node", "_timer", "_transport")

    def __init__(self, node: Node, http: Callable[[], asyncio.Protocol]) -> None:
        self._node = node
        self._http = http
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:  # answered already; the socket is closing
            return
        buffer = self._buffer + data
        self._buffer = buffer
        line_end = buffer.find(b"\n")
        if line_end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                self._to_http()  # not a request line we could route: aiohttp answers it
            return
        request = parse_request_line(buffer[:line_end].removesuffix(b"\r"))
        if (
            request is None
            or request[0] != "GET"
            or not is_websocket_path(request[1].partition("?")[0])
        ):
            self._to_http()
            return
        blank = _BLANK_LINE.search(buffer, line_end)
        if blank is None:
            if len(buffer) > MAX_HEAD_BYTES:
                self._refuse(Refusal(431, f"request head over {MAX_HEAD_BYTES} bytes"))
            return
        if blank.start() > MAX_HEAD_BYTES:
            self._refuse(Refusal(431, f"request head over {MAX_HEAD_BYTES} bytes"))
            return
        self._upgrade(buffer[: blank.start()], buffer[blank.end() :])

    def eof_received(self) -> bool:
        return False  # a request cut short: nothing to answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()

    def _upgrade(self, raw_head: bytes, tail: bytes) -> None:
        transport = self._transport
        assert transport is not None
        try:
            head = parse_head(raw_head)
        except HeadError as exc:
            self._refuse(Refusal(400, str(exc)))
            return
        headers = head.headers
        if headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers:
            self._refuse(Refusal(400, "a WebSocket upgrade request has no body"))
            return
        node = self._node
        checked: str | Refusal | None = refusal(
            node, origin=headers.get("origin"), host=headers.get("host"), ip=peer_ip(transport)
        )
        if checked is None:
            checked = check_upgrade(head.method, head.version, headers)
        if isinstance(checked, Refusal):
            self._refuse(checked)
            return
        self._release()
        open_websocket(node, transport, checked, head.path, head.query, tail, headers)

    def _refuse(self, refused: Refusal) -> None:
        transport = self._transport
        self._release()
        if transport is not None:
            transport.write(refused.encode())
            transport.close()

    def _to_http(self) -> None:
        transport, buffer = self._transport, self._buffer
        self._release()
        if transport is None or transport.is_closing():
            return
        handler = self._http()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(buffer)

    def _release(self) -> None:
        """Forgets the connection: from here it belongs to someone else, or to no one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        self._buffer = b""


async def start_site(
    runner: web.AppRunner, sock: socket.socket, backlog: int = 4096
) -> asyncio.Server:
    """Serves ``runner``'s application on the listening ``sock`` through the front.

    Every server of tidings starts this way (the CLI's workers, the tests, the benchmarks).
    At shutdown, ``close()`` the returned server first (stop accepting), then
    ``runner.cleanup()``.

    Args:
        runner: a set-up runner of an application built by ``create_app``.
        sock: a bound, listening socket (shared by every worker with SO_REUSEPORT).
        backlog: the listen backlog; the kernel caps it at ``net.core.somaxconn``. A burst
            of reconnecting clients overflows aiohttp's default of 128.
    """
    http = runner.server
    if http is None:
        raise RuntimeError("start_site needs runner.setup() first")
    node = runner.app[NODE]
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: FrontProtocol(node, http), sock=sock, backlog=backlog)
