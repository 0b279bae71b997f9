"""WebSocket frames (RFC 6455 §5): a sans-I/O reader of client frames, and server frames.

:class:`FrameReader` takes the bytes a client sent, in chunks of any size, and returns
events: whole messages, pings, pongs, a close, or a :class:`Failure` naming the close code
the connection must end with. It owns no socket; the transport writes what the events
call for (a pong, a close).

Why not a library: ``wsproto`` (the maintained sans-I/O implementation) keeps about
1.7 KB of Python objects per idle server connection (``Connection(ConnectionType.SERVER)``,
wsproto 1.3.2, measured with tracemalloc over 5,000 connections), more than this reader and
its connection together, and an idle connection's memory is what this path exists to cut.
An idle reader here is one object with six slots and no buffer.

No extension is ever negotiated, so the reserved bits must be clear; a message is limited
as a whole (all its fragments), as aiohttp's ``max_msg_size`` did before.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from tidings.codes import CloseCode

__all__ = [
    "Close",
    "Event",
    "Failure",
    "FrameReader",
    "Message",
    "Opcode",
    "Ping",
    "Pong",
    "close_frame",
    "encode_frame",
    "unmask",
]


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2); the others are reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


@dataclass(frozen=True, slots=True)
class Message:
    """A complete data message (its fragments joined); ``text`` ones are valid UTF-8."""

    data: bytes
    text: bool


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping: answer with a pong carrying the same payload."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong (unsolicited or not): nothing to do."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The client's close frame: ``code`` is None when it sent none."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The client broke the protocol: close with ``code``; ``reason`` says how (ASCII)."""

    code: CloseCode
    reason: str


Event = Message | Ping | Pong | Close | Failure

_DATA_OPCODES = frozenset((Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY))
_OPCODES = frozenset(int(op) for op in Opcode)
#: Close codes a peer may send (RFC 6455 §7.4, and 1012-1014 registered since).
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


def unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (RFC 6455 §5.3); the same both ways."""
    n = len(payload)
    if not n:
        return b""
    # One XOR of two big integers runs in C: far faster than a Python loop over the bytes.
    key = int.from_bytes((mask * ((n + 3) // 4))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def encode_frame(opcode: Opcode, payload: bytes) -> bytes:
    """An unmasked, final frame: what a server sends (RFC 6455 §5.1).

    Server frames are never masked, so one frame can be written to many sockets as is.
    """
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 1 << 16:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A close frame with ``code`` and ``reason`` cut to fit the 125-byte control payload."""
    if code is None:
        return encode_frame(Opcode.CLOSE, b"")
    encoded = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return encode_frame(Opcode.CLOSE, code.to_bytes(2, "big") + encoded)


class FrameReader:
    """Reads the frames of one client connection.

    Args:
        max_message_bytes: the largest message accepted (all fragments together); a
            larger one fails with 1009 as soon as its length is known.
    """

    __slots__ = ("_buffer", "_done", "_fragments", "_limit", "_size", "_text")

    def __init__(self, max_message_bytes: int) -> None:
        self._limit = max_message_bytes
        self._buffer = b""
        # The fragments of a message whose last frame has not arrived yet (None: none).
        self._fragments: list[bytes] | None = None
        self._size = 0
        self._text = False
        self._done = False

    @property
    def done(self) -> bool:
        """Whether a close or a failure was read: every later byte is ignored."""
        return self._done

    def feed(self, data: bytes) -> list[Event]:
        """The events completed by ``data``, in order; a failure or a close comes last."""
        if self._done:
            return []
        buf = self._buffer + data if self._buffer else data
        events: list[Event] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            opcode = first & 0x0F
            length = second & 0x7F
            failure = _header_failure(first, second, opcode, length)
            if failure is None:
                failure = self._sequence_failure(opcode)
            if failure is not None:
                events.append(self._fail(failure))
                return events
            header = 2
            if length == 126:
                header = 4
            elif length == 127:
                header = 10
            if end - pos < header:
                break
            if header > 2:
                length = int.from_bytes(buf[pos + 2 : pos + header], "big")
                if length >> 63:
                    events.append(self._fail(Failure(CloseCode.PROTOCOL_ERROR, "bad length")))
                    return events
            if opcode in _DATA_OPCODES and self._size + length > self._limit:
                reason = f"message over client.max_frame_bytes ({self._limit})"
                events.append(self._fail(Failure(CloseCode.MESSAGE_TOO_BIG, reason)))
                return events
            start = pos + header + 4
            if end - start < length:
                break
            payload = unmask(buf[start : start + length], buf[start - 4 : start])
            pos = start + length
            event = self._frame(bool(first & 0x80), opcode, payload)
            if event is not None:
                events.append(event)
                if self._done:
                    return events
        self._buffer = buf[pos:] if pos < end else b""
        return events

    def _sequence_failure(self, opcode: int) -> Failure | None:
        if opcode == Opcode.CONTINUATION and self._fragments is None:
            return Failure(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
        if opcode in (Opcode.TEXT, Opcode.BINARY) and self._fragments is not None:
            return Failure(CloseCode.PROTOCOL_ERROR, "new message before the last one ended")
        return None

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> Event | None:
        if opcode == Opcode.PING:
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        if opcode == Opcode.CLOSE:
            return self._close(payload)
        if opcode != Opcode.CONTINUATION:
            if fin:
                return self._message(payload, opcode == Opcode.TEXT)
            self._fragments = [payload]
            self._size = len(payload)
            self._text = opcode == Opcode.TEXT
            return None
        fragments = self._fragments
        assert fragments is not None  # checked with the header
        fragments.append(payload)
        self._size += len(payload)
        if not fin:
            return None
        self._fragments = None
        self._size = 0
        return self._message(b"".join(fragments), self._text)

    def _message(self, data: bytes, text: bool) -> Event:
        if text:
            try:
                data.decode()
            except UnicodeDecodeError:
                return self._fail(Failure(CloseCode.INVALID_DATA, "text message is not UTF-8"))
        return Message(data, text)

    def _close(self, payload: bytes) -> Event:
        if not payload:
            self._finish()
            return Close(None, "")
        code = int.from_bytes(payload[:2], "big")
        if len(payload) == 1 or not (code in _VALID_CLOSE or 3000 <= code <= 4999):
            return self._fail(Failure(CloseCode.PROTOCOL_ERROR, "invalid close code"))
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            return self._fail(Failure(CloseCode.INVALID_DATA, "close reason is not UTF-8"))
        self._finish()
        return Close(code, reason)

    def _fail(self, failure: Failure) -> Failure:
        self._finish()
        return failure

    def _finish(self) -> None:
        self._done = True
        self._buffer = b""
        self._fragments = None


def _header_failure(first: int, second: int, opcode: int, length: int) -> Failure | None:
    """What is wrong with a frame's first two bytes, if anything."""
    if first & 0x70:
        return Failure(CloseCode.PROTOCOL_ERROR, "reserved bits set")
    if opcode not in _OPCODES:
        return Failure(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
    if not second & 0x80:
        return Failure(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
    if opcode >= Opcode.CLOSE:
        if not first & 0x80:
            return Failure(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
        if length > 125:
            return Failure(CloseCode.PROTOCOL_ERROR, "control frame over 125 bytes")
    return None
