"""Publication encodings: built once, exact bytes, valid WebSocket frames."""

from __future__ import annotations

import orjson

from tidings.protocol import eventstream
from tidings.protocol.wsframes import Opcode, encode_frame
from tidings.publication import ChannelEvent, Publication


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
    assert p.push_frame == encode_frame(Opcode.TEXT, p.push)
    assert p.uni_frame == encode_frame(Opcode.TEXT, p.uni)


def test_unicode_channel() -> None:
    p = Publication("caf\u00e9", 1, '"\u2603"'.encode(), 0.0)
    assert orjson.loads(p.push)["push"]["channel"] == "caf\u00e9"


def test_sse_follows_the_epoch() -> None:
    p = Publication("c", 3, b"1", 0.0)
    first = p.sse("a")
    assert p.sse("b").startswith(b"id: b:3\n")
    assert p.sse("a") == first
    assert p.sse_chunk("a") == eventstream.chunk(first)
    assert p.sse_chunk("b") == eventstream.chunk(p.sse("b"))


def test_emulated_stream_chunks_are_exact_and_cached() -> None:
    p = Publication("c", 3, b"1", 0.0)
    line = b'{"push":{"channel":"c","pub":{"data":1,"offset":3}}}'
    assert p.push_stream_chunk == eventstream.chunk(line + b"\n")
    assert p.push_sse_chunk == eventstream.chunk(b"data: " + line + b"\n\n")
    assert p.push_stream_chunk is p.push_stream_chunk
    assert p.push_sse_chunk is p.push_sse_chunk


def test_a_client_publication_carries_the_publisher_info() -> None:
    pub = Publication("room:1", 7, b'{"t":1}', 1.0, b'{"user":"bob","client":"c1"}')
    assert pub.pub == b'{"data":{"t":1},"offset":7,"info":{"user":"bob","client":"c1"}}'
    assert orjson.loads(pub.push)["push"]["pub"]["info"] == {"user": "bob", "client": "c1"}


def test_channel_event_encodings() -> None:
    event = ChannelEvent("room:1", "join", b'{"info":{"user":"a","client":"c"}}')
    assert event.uni == b'{"channel":"room:1","join":{"info":{"user":"a","client":"c"}}}'
    assert event.push == b'{"push":' + event.uni + b"}"
    assert event.push is event.push  # built once, shared by every recipient
