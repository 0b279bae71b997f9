"""What the transports that answer with one long HTTP response share: event streams
(``transport/sse.py``) and the emulated connections (``transport/emulated.py``).

The response headers go out through aiohttp (``StreamResponse.prepare``); the body is
then written straight to the socket by the shared per-connection writer, in HTTP/1.1
chunked encoding (close-delimited for HTTP/1.0). The request's input is taken over, as
a WebSocket upgrade takes it, so the end of the client's side is seen at once.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from tidings.codes import DisconnectCode
from tidings.node import Node
from tidings.protocol.operations import Peer
from tidings.transport.connection import Connection, Framing, WriterHost

__all__ = ["StreamConnection", "serve_stream"]

#: Seconds the end of a response may take to be written before the socket is aborted.
_CLOSE_GRACE = 2.0


class StreamConnection(Connection):
    """A connection whose socket carries one long response.

    Nothing is written before :meth:`start` (the response headers must go first); what
    is queued meanwhile waits in order.
    """

    __slots__ = ("_done", "_started")

    def __init__(
        self,
        host: WriterHost,
        transport: asyncio.Transport,
        framing: Framing,
        max_queue_bytes: int,
        peer: Peer | None = None,
    ) -> None:
        super().__init__(host, transport, framing, max_queue_bytes, peer)
        self._started = False
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @abc.abstractmethod
    def _farewell(self, code: int, reason: str) -> bytes:
        """The last message, telling the client ``code`` and ``reason``, as one line of
        the framing's batch."""

    def flush(self) -> None:
        if self._started:
            super().flush()

    def start(self, request: web.Request) -> None:
        """The headers are out: writes what is queued and watches for the client leaving."""
        protocol = request.protocol
        if protocol.transport is None or self.transport.is_closing():
            self._end()
            return
        # The stream never reads the request again; take over its input like a WebSocket
        # upgrade does, to learn the moment the client goes (feed_eof).
        protocol.set_parser(cast(Any, _Hangup(self._end)))
        self._started = True
        self.flush()

    async def wait(self) -> None:
        """Returns when the client left or the connection was closed."""
        await self._done

    def _end(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _close_transport(self, code: int, reason: str) -> None:
        transport = self.transport
        if self._started and not transport.is_closing():
            if code == DisconnectCode.SLOW:
                # Its buffer is full; more bytes would only wait behind the rest.
                transport.abort()
            else:
                transport.write(self._framing.batch([self._farewell(code, reason)]))
        self._end()


class _Hangup:
    """Stands in as the request's payload parser: drops input, reports the end of input."""

    def __init__(self, on_eof: Callable[[], None]) -> None:
        self._on_eof = on_eof

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        return False, b""

    def feed_eof(self) -> None:
        self._on_eof()


async def serve_stream(
    request: web.Request,
    node: Node,
    conn: StreamConnection,
    response: web.StreamResponse,
    *,
    chunked: bool,
) -> web.StreamResponse:
    """Streams ``conn`` as ``response`` until the client leaves or the connection closes.

    ``conn`` has its session, connected, and whatever must come first queued.
    """
    transport = conn.transport
    response.force_close()  # the connection ends with the stream
    if chunked:
        response.enable_chunked_encoding()
    gauge = node.metrics.connections.labels(conn.kind)
    gauge.inc()
    node.join(conn)
    try:
        await response.prepare(request)
        conn.start(request)
        if conn.session is not None:
            node.timers.schedule(conn, conn.session.deadline)
        await conn.wait()
    except ConnectionError:
        pass
    finally:
        conn.finished()
        node.leave(conn)
        gauge.dec()
    if response.prepared and not transport.is_closing():
        # Ends the chunked body; a client that does not read it is not waited for long.
        try:
            await asyncio.wait_for(response.write_eof(), _CLOSE_GRACE)
        except (TimeoutError, ConnectionError):
            transport.abort()
    return response
