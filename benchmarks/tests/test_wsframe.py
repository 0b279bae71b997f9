"""The load generator's WebSocket codec, on bytes alone."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from benchmarks.wsframe import (
    FrameParser,
    HandshakeError,
    Opcode,
    ProtocolError,
    encode_frame,
    handshake_request,
    parse_handshake_response,
)


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def _unmask(frame: bytes) -> tuple[int, bytes]:
    """Decode one client frame as a server would."""
    assert frame[1] & 0x80, "client frames must be masked"
    n = frame[1] & 0x7F
    pos = 2
    if n == 126:
        n, pos = struct.unpack("!H", frame[2:4])[0], 4
    elif n == 127:
        n, pos = struct.unpack("!Q", frame[2:10])[0], 10
    key, data = frame[pos : pos + 4], frame[pos + 4 : pos + 4 + n]
    return frame[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


def test_handshake_accepts_the_right_key() -> None:
    request, accept = handshake_request("127.0.0.1:1", "/ws")
    key = request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0]
    expected = base64.b64encode(
        hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    )
    assert accept == expected
    head = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    assert parse_handshake_response(head[:20], accept) == 0
    assert parse_handshake_response(head + b"\x81\x00", accept) == len(head)


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 403 Forbidden\r\n\r\n", b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: x\r\n\r\n"],
)
def test_handshake_refusals(head: bytes) -> None:
    with pytest.raises(HandshakeError):
        parse_handshake_response(head, b"abc")


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_encode_masks_every_length(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    assert _unmask(encode_frame(Opcode.TEXT, payload)) == (Opcode.TEXT, payload)


def test_parser_reassembles_split_and_fragmented_messages() -> None:
    stream = (
        _server_frame(0x1, b"hel", fin=False)
        + _server_frame(0x9, b"p")  # a control frame between fragments
        + _server_frame(0x0, b"lo")
        + _server_frame(0x1, b"x" * 70000)
    )
    parser = FrameParser()
    out = []
    for i in range(0, len(stream), 7):
        out += parser.feed(stream[i : i + 7])
    assert out == [(Opcode.PING, b"p"), (Opcode.TEXT, b"hello"), (Opcode.TEXT, b"x" * 70000)]


def test_parser_rejects_reserved_bits_and_stray_continuations() -> None:
    with pytest.raises(ProtocolError):
        FrameParser().feed(b"\xc1\x00")
    with pytest.raises(ProtocolError):
        FrameParser().feed(_server_frame(0x0, b"x"))


@pytest.mark.parametrize("size", [0, 2, 125, 126, 127, 200, 65535, 65536])
@pytest.mark.parametrize("opcode", [0x1, 0x2])
def test_one_whole_frame_per_read_gives_what_the_general_path_gives(size: int, opcode: int) -> None:
    frame = _server_frame(opcode, bytes(range(256)) * (size // 256) + b"y" * (size % 256))
    whole = FrameParser().feed(frame)
    split = FrameParser()
    pieces = split.feed(frame[:1]) + split.feed(frame[1:])
    assert whole == pieces == [(Opcode(opcode), frame[-size:] if size else b"")]
    assert isinstance(whole[0][0], Opcode)


def test_reads_the_fast_path_must_not_take() -> None:
    # A 16-bit length one byte short of the read: the rest must wait in the buffer.
    parser = FrameParser()
    frame = _server_frame(0x1, b"z" * 300)
    assert parser.feed(frame[:-1]) == []
    assert parser.feed(frame[-1:]) == [(Opcode.TEXT, b"z" * 300)]
    # Two frames in one read, a masked frame, and a final frame ending a fragmented message.
    assert FrameParser().feed(_server_frame(0x1, b"a") + _server_frame(0x1, b"b")) == [
        (Opcode.TEXT, b"a"), (Opcode.TEXT, b"b")]
    key = b"\x01\x02\x03\x04"
    masked = bytes([0x81, 0x80 | 2, *key, ord("h") ^ 1, ord("i") ^ 2])
    assert FrameParser().feed(masked) == [(Opcode.TEXT, b"hi")]
    parser = FrameParser()
    assert parser.feed(_server_frame(0x1, b"he", fin=False)) == []
    assert parser.feed(_server_frame(0x0, b"y")) == [(Opcode.TEXT, b"hey")]
    # Reserved bits are still refused on a read that is one whole frame.
    with pytest.raises(ProtocolError):
        FrameParser().feed(b"\xc1\x02ok")
    with pytest.raises(ProtocolError):
        FrameParser().feed(b"\x83\x02ok")
