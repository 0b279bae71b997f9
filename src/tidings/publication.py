"""A publication and its wire encodings, each built once and shared by every subscriber."""

from __future__ import annotations

import orjson

__all__ = ["Publication", "websocket_text_frame"]


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

    @property
    def sse(self) -> bytes:
        """A server-sent event whose ``id`` is the position, so ``Last-Event-ID`` resumes."""
        if self._sse is None:
            self._sse = b"id: %d\ndata: %b\n\n" % (self.offset, self.uni)
        return self._sse

    def __repr__(self) -> str:
        return f"Publication({self.channel!r}, offset={self.offset})"
