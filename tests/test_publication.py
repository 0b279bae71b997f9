"""Publication encodings: built once, exact bytes, valid WebSocket frames."""

from __future__ import annotations

import orjson
import pytest

from tidings.publication import Publication, http_chunk, sse_event_id, websocket_text_frame


def test_encodings() -> None:
    p = Publication('news:"q"', 7, b'{"n":1}', 1.0)
    assert p.pub == b'{"data":{"n":1},"offset":7}'
    assert p.push == b'{"push":{"channel":"news:\\"q\\"","pub":{"data":{"n":1},"offset":7}}}'
    assert p.uni == b'{"channel":"news:\\"q\\"","pub":{"data":{"n":1},"offset":7}}'
    assert p.sse("ep1") == (
        b'id: ep1:7\ndata: {"channel":"news:\\"q\\"","pub":{"data":{"n":1},"offset":7}}\n\n'
    )
    for encoded in (p.pub, p.push, p.uni):
        orjson.loads(encoded)
        assert b"\n" not in encoded
    assert repr(p) == "Publication('news:\"q\"', offset=7)"


def test_encodings_are_cached() -> None:
    p = Publication("c", 1, b"1", 0.0)
    assert p.push is p.push and p.uni is p.uni and p.sse("e") is p.sse("e")
    assert p.sse_chunk("e") is p.sse_chunk("e")
    assert p.push_frame is p.push_frame and p.uni_frame is p.uni_frame
    assert p.push_frame == websocket_text_frame(p.push)
    assert p.uni_frame == websocket_text_frame(p.uni)


def test_unicode_channel() -> None:
    p = Publication("caf\u00e9", 1, '"\u2603"'.encode(), 0.0)
    assert orjson.loads(p.push)["push"]["channel"] == "caf\u00e9"


def _parse_frame(frame: bytes) -> bytes:
    assert frame[0] == 0x81  # FIN + text, never masked
    n = frame[1]
    assert not n & 0x80
    if n == 126:
        n, start = int.from_bytes(frame[2:4], "big"), 4
    elif n == 127:
        n, start = int.from_bytes(frame[2:10], "big"), 10
    else:
        start = 2
    assert len(frame) == start + n
    return frame[start:]


@pytest.mark.parametrize(
    ("size", "header_len"),
    [(0, 2), (1, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (70000, 10)],
)
def test_websocket_text_frame_lengths(size: int, header_len: int) -> None:
    payload = b"x" * size
    frame = websocket_text_frame(payload)
    assert len(frame) - size == header_len
    assert _parse_frame(frame) == payload


def test_sse_follows_the_epoch() -> None:
    p = Publication("c", 3, b"1", 0.0)
    first = p.sse("a")
    assert p.sse("b").startswith(b"id: b:3\n")
    assert p.sse("a") == first
    assert p.sse_chunk("a") == http_chunk(first)
    assert p.sse_chunk("b") == http_chunk(p.sse("b"))


@pytest.mark.parametrize(
    ("epoch", "offset", "expected"),
    [("ep1", 7, b"ep1:7"), ("", 0, b":0"), ("a:b c/\n", 12, b"a%3Ab%20c%2F%0A:12")],
)
def test_sse_event_id(epoch: str, offset: int, expected: bytes) -> None:
    assert sse_event_id(epoch, offset) == expected
    assert b"\n" not in sse_event_id(epoch, offset)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(b"", b"0\r\n\r\n"), (b"abc", b"3\r\nabc\r\n"), (b"x" * 26, b"1a\r\n" + b"x" * 26 + b"\r\n")],
)
def test_http_chunk(payload: bytes, expected: bytes) -> None:
    assert http_chunk(payload) == expected
