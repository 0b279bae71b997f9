"""A minimal sans-I/O WebSocket client codec (RFC 6455) for the load generator.

It builds the opening handshake, checks the server's answer, masks outgoing frames and parses
incoming ones. It keeps no socket and no event loop, so one connection costs a few hundred bytes
and the load generator can hold ~19,500 of them per process. Extensions and subprotocols are
never offered, so frames carry no RSV bits.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from enum import IntEnum

__all__ = [
    "FrameParser",
    "HandshakeError",
    "Opcode",
    "ProtocolError",
    "encode_frame",
    "handshake_request",
    "parse_handshake_response",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 16 * 1024
_MAX_MESSAGE = 16 * 1024 * 1024


class Opcode(IntEnum):
    """Frame opcodes of RFC 6455 section 5.2."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


#: Opcode by its 4-bit value, None where RFC 6455 reserves it (a lookup, not an enum call).
_OPCODES: tuple[Opcode | None, ...] = tuple(
    Opcode(v) if v in Opcode._value2member_map_ else None for v in range(16)
)


class HandshakeError(Exception):
    """The server did not switch protocols the way RFC 6455 requires."""


class ProtocolError(Exception):
    """The server sent a frame this client cannot accept."""


def handshake_request(host: str, path: str) -> tuple[bytes, bytes]:
    """Build the HTTP upgrade request.

    Args:
        host: value of the Host header, e.g. ``127.0.0.1:8888``.
        path: request target, e.g. ``/connection/websocket``.

    Returns:
        The request bytes and the ``Sec-WebSocket-Accept`` value the server must answer with.
    """
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    request = (
        b"GET " + path.encode() + b" HTTP/1.1\r\n"
        b"Host: " + host.encode() + b"\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        # Tornado and RabbitMQ check Origin only when present; omitting it mimics a non-browser.
        b"\r\n"
    )
    return request, accept


def parse_handshake_response(buffer: bytes, accept: bytes) -> int:
    """Check a complete-or-partial upgrade response.

    Args:
        buffer: bytes received so far.
        accept: the value returned by :func:`handshake_request`.

    Returns:
        0 while the head is incomplete, else the number of bytes the head used (frames may
        follow in the same read).

    Raises:
        HandshakeError: the status is not 101 or the accept key does not match.
    """
    end = buffer.find(_HEAD_END)
    if end < 0:
        if len(buffer) > _MAX_HEAD:
            raise HandshakeError("response head too large")
        return 0
    head = buffer[:end].decode("latin-1").split("\r\n")
    status = head[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise HandshakeError(f"status line {head[0]!r}")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept", "").encode() != accept:
        raise HandshakeError("bad Sec-WebSocket-Accept")
    return end + len(_HEAD_END)


def _mask(payload: bytes, key: bytes) -> bytes:
    # XOR through one big integer: far faster in CPython than a per-byte loop.
    if not payload:
        return payload
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")
    return masked.to_bytes(n, "little")


def encode_frame(opcode: Opcode, payload: bytes) -> bytes:
    """Encode one final, masked client frame.

    Args:
        opcode: frame type.
        payload: application data (already UTF-8 for text frames).

    Returns:
        The frame bytes.
    """
    n = len(payload)
    first = 0x80 | int(opcode)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + _mask(payload, key)


class FrameParser:
    """Incremental parser of server frames that reassembles fragmented messages.

    Feed it bytes as they arrive; it returns whole messages as ``(opcode, payload)`` pairs,
    where opcode is TEXT, BINARY, CLOSE, PING or PONG.
    """

    __slots__ = ("_buf", "_frag_op", "_frags")

    def __init__(self) -> None:
        self._buf = b""
        self._frag_op: Opcode | None = None
        self._frags: list[bytes] = []

    def feed(self, data: bytes) -> list[tuple[Opcode, bytes]]:
        """Consume received bytes.

        Args:
            data: bytes from the socket.

        Returns:
            The messages completed by these bytes, in order.

        Raises:
            ProtocolError: reserved bits, unknown opcode, oversized or misplaced frame.
        """
        if not self._buf and self._frag_op is None:
            # The usual read: exactly one whole, final, unmasked data frame. Taking it
            # without the general loop halves the per-message cost, which matters at light
            # load, where the load generator's reading is part of the measured latency.
            size = len(data)
            b0 = data[0] if size >= 4 else 0
            if b0 == 0x81 or b0 == 0x82:
                length = data[1]  # a mask bit (not for a client) makes it 128+: no match
                if length == 126:
                    if ((data[2] << 8) | data[3]) + 4 == size:
                        return [(_OPCODES[b0 & 0x0F], data[4:])]  # type: ignore[list-item]
                elif length + 2 == size and length < 126:
                    return [(_OPCODES[b0 & 0x0F], data[2:])]  # type: ignore[list-item]
        buf = self._buf + data if self._buf else data
        out: list[tuple[Opcode, bytes]] = []
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise ProtocolError("reserved bits set")
            length = b1 & 0x7F
            hdr = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                hdr = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if length > _MAX_MESSAGE:
                raise ProtocolError("frame too large")
            masked = b1 & 0x80
            if masked:
                hdr += 4
            if size - pos < hdr + length:
                break
            payload = buf[pos + hdr : pos + hdr + length]
            if masked:
                payload = _mask(payload, buf[pos + hdr - 4 : pos + hdr])
            pos += hdr + length
            self._take(b0 & 0x80, b0 & 0x0F, payload, out)
        self._buf = buf[pos:]
        return out

    def _take(self, fin: int, op: int, payload: bytes, out: list[tuple[Opcode, bytes]]) -> None:
        opcode = _OPCODES[op]
        if opcode is None:
            raise ProtocolError(f"unknown opcode {op}")
        if opcode >= Opcode.CLOSE:
            if not fin:
                raise ProtocolError("fragmented control frame")
            out.append((opcode, payload))
        elif opcode == Opcode.CONT:
            if self._frag_op is None:
                raise ProtocolError("continuation without a start")
            self._frags.append(payload)
            if fin:
                out.append((self._frag_op, b"".join(self._frags)))
                self._frag_op = None
                self._frags = []
        elif fin:
            out.append((opcode, payload))
        else:
            self._frag_op = opcode
            self._frags = [payload]
