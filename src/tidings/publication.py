"""A publication and its wire encodings, each built once and shared by every subscriber."""

from __future__ import annotations

from urllib.parse import quote

import orjson

__all__ = ["Publication", "http_chunk", "sse_event_id", "websocket_text_frame"]


def websocket_text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 §5.2) carrying ``payload``.

    Server frames are never masked, so one frame can be written to many sockets as is.
    """
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


def http_chunk(payload: bytes) -> bytes:
    """``payload`` as one chunk of an HTTP/1.1 chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def sse_event_id(epoch: str, offset: int) -> bytes:
    """The SSE ``id`` of a position: ``<epoch>:<offset>``, the epoch percent-encoded.

    The epoch is part of the id because a browser echoes the id back verbatim as
    ``Last-Event-ID``: an offset alone from an earlier incarnation of the log could fall
    inside the new one's range and be "recovered" with the wrong events.
    """
    return b"%b:%d" % (quote(epoch, safe="").encode("ascii"), offset)


class Publication:
    """One event on one channel, with lazily built, cached encodings.

    Attributes:
        channel: the channel it was published to.
        offset: the log position of the event (the same for every channel it went to).
        data: compact JSON of the payload.
        timestamp: seconds since the Unix epoch when the log took the event.
    """

    __slots__ = (
        "_pub",
        "_push",
        "_push_frame",
        "_sse",
        "_sse_chunk",
        "_sse_epoch",
        "_uni",
        "_uni_frame",
        "channel",
        "data",
        "offset",
        "timestamp",
    )

    def __init__(self, channel: str, offset: int, data: bytes, timestamp: float) -> None:
        self.channel = channel
        self.offset = offset
        self.data = data
        self.timestamp = timestamp
        self._pub: bytes | None = None
        self._push: bytes | None = None
        self._push_frame: bytes | None = None
        self._uni: bytes | None = None
        self._uni_frame: bytes | None = None
        self._sse: bytes | None = None
        self._sse_chunk: bytes | None = None
        self._sse_epoch = ""

    @property
    def pub(self) -> bytes:
        """``{"data":…,"offset":N}``: the Publication object of the protocol."""
        if self._pub is None:
            self._pub = b'{"data":%b,"offset":%d}' % (self.data, self.offset)
        return self._pub

    @property
    def push(self) -> bytes:
        """The bidirectional push message: ``{"push":{"channel":…,"pub":…}}``."""
        if self._push is None:
            self._push = b'{"push":{"channel":%b,"pub":%b}}' % (
                orjson.dumps(self.channel),
                self.pub,
            )
        return self._push

    @property
    def push_frame(self) -> bytes:
        """``push`` as a complete WebSocket frame."""
        if self._push_frame is None:
            self._push_frame = websocket_text_frame(self.push)
        return self._push_frame

    @property
    def uni(self) -> bytes:
        """The unidirectional push (no reply wrapper): ``{"channel":…,"pub":…}``."""
        if self._uni is None:
            self._uni = b'{"channel":%b,"pub":%b}' % (orjson.dumps(self.channel), self.pub)
        return self._uni

    @property
    def uni_frame(self) -> bytes:
        """``uni`` as a complete WebSocket frame."""
        if self._uni_frame is None:
            self._uni_frame = websocket_text_frame(self.uni)
        return self._uni_frame

    def sse(self, epoch: str) -> bytes:
        """A server-sent event: ``id: <epoch>:<offset>``, then ``uni`` as its ``data``.

        Cached for the last epoch asked, which is the node's: every subscriber gets the
        same bytes, and a publication outlives no epoch change (history is dropped then).
        """
        event = self._sse
        if event is None or epoch != self._sse_epoch:
            event = b"id: %b\ndata: %b\n\n" % (sse_event_id(epoch, self.offset), self.uni)
            self._sse = event
            self._sse_epoch = epoch
            self._sse_chunk = None
        return event

    def sse_chunk(self, epoch: str) -> bytes:
        """``sse(epoch)`` as one HTTP/1.1 chunk, ready for the socket."""
        event = self.sse(epoch)
        if self._sse_chunk is None:
            self._sse_chunk = http_chunk(event)
        return self._sse_chunk

    def __repr__(self) -> str:
        return f"Publication({self.channel!r}, offset={self.offset})"
