"""A publication and its wire encodings, each built once and shared by every subscriber."""

from __future__ import annotations

import orjson

from tidings.protocol import eventstream
from tidings.protocol.wsframes import Opcode, encode_frame

__all__ = ["ChannelEvent", "Publication"]


class Publication:
    """One event on one channel, with lazily built, cached encodings.

    Attributes:
        channel: the channel it was published to.
        offset: the log position of the event (the same for every channel it went to).
        data: compact JSON of the payload.
        timestamp: seconds since the Unix epoch when the log took the event.
        info: compact JSON of the publisher's ClientInfo (client publications), or None.
    """

    __slots__ = (
        "_pub",
        "_push",
        "_push_frame",
        "_push_sse_chunk",
        "_push_stream_chunk",
        "_sse",
        "_sse_chunk",
        "_sse_epoch",
        "_uni",
        "_uni_frame",
        "channel",
        "data",
        "info",
        "offset",
        "timestamp",
    )

    def __init__(
        self, channel: str, offset: int, data: bytes, timestamp: float, info: bytes | None = None
    ) -> None:
        self.channel = channel
        self.offset = offset
        self.data = data
        self.timestamp = timestamp
        self.info = info
        self._pub: bytes | None = None
        self._push: bytes | None = None
        self._push_frame: bytes | None = None
        self._push_stream_chunk: bytes | None = None
        self._push_sse_chunk: bytes | None = None
        self._uni: bytes | None = None
        self._uni_frame: bytes | None = None
        self._sse: bytes | None = None
        self._sse_chunk: bytes | None = None
        self._sse_epoch = ""

    @property
    def pub(self) -> bytes:
        """``{"data":…,"offset":N}``: the Publication object of the protocol."""
        if self._pub is None:
            if self.info is None:
                self._pub = b'{"data":%b,"offset":%d}' % (self.data, self.offset)
            else:
                self._pub = b'{"data":%b,"offset":%d,"info":%b}' % (
                    self.data,
                    self.offset,
                    self.info,
                )
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
            self._push_frame = encode_frame(Opcode.TEXT, self.push)
        return self._push_frame

    @property
    def push_stream_chunk(self) -> bytes:
        """``push`` as one line of an HTTP stream, in one HTTP/1.1 chunk."""
        if self._push_stream_chunk is None:
            self._push_stream_chunk = eventstream.chunk(self.push + b"\n")
        return self._push_stream_chunk

    @property
    def push_sse_chunk(self) -> bytes:
        """``push`` as the data of a server-sent event (no id), in one HTTP/1.1 chunk."""
        if self._push_sse_chunk is None:
            self._push_sse_chunk = eventstream.chunk(eventstream.event(self.push))
        return self._push_sse_chunk

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
            self._uni_frame = encode_frame(Opcode.TEXT, self.uni)
        return self._uni_frame

    def sse(self, epoch: str) -> bytes:
        """A server-sent event: ``id: <epoch>:<offset>``, then ``uni`` as its ``data``.

        Cached for the last epoch asked, which is the node's: every subscriber gets the
        same bytes, and a publication outlives no epoch change (history is dropped then).
        """
        event = self._sse
        if event is None or epoch != self._sse_epoch:
            event = eventstream.event(self.uni, id=eventstream.event_id(epoch, self.offset))
            self._sse = event
            self._sse_epoch = epoch
            self._sse_chunk = None
        return event

    def sse_chunk(self, epoch: str) -> bytes:
        """``sse(epoch)`` as one HTTP/1.1 chunk, ready for the socket."""
        event = self.sse(epoch)
        if self._sse_chunk is None:
            self._sse_chunk = eventstream.chunk(event)
        return self._sse_chunk

    def __repr__(self) -> str:
        return f"Publication({self.channel!r}, offset={self.offset})"


class ChannelEvent:
    """A push on a channel that is not a publication: ``join`` or ``leave``.

    Like a publication it is encoded once per wire format and shared by every recipient.

    Attributes:
        channel: the channel.
        kind: the push's key (``join``, ``leave``).
        body: compact JSON of the push's value (``{"info":{…}}``).
    """

    __slots__ = ("_push", "_uni", "body", "channel", "kind")

    def __init__(self, channel: str, kind: str, body: bytes) -> None:
        self.channel = channel
        self.kind = kind
        self.body = body
        self._push: bytes | None = None
        self._uni: bytes | None = None

    @property
    def uni(self) -> bytes:
        """The unidirectional push: ``{"channel":…,"join":…}``."""
        if self._uni is None:
            self._uni = b'{"channel":%b,"%b":%b}' % (
                orjson.dumps(self.channel),
                self.kind.encode(),
                self.body,
            )
        return self._uni

    @property
    def push(self) -> bytes:
        """The bidirectional push: ``{"push":{"channel":…,"join":…}}``."""
        if self._push is None:
            self._push = b'{"push":%b}' % self.uni
        return self._push

    def __repr__(self) -> str:
        return f"ChannelEvent({self.channel!r}, {self.kind!r})"
