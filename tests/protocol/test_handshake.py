"""The opening handshake: request heads in, an accept key or a refusal out."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol.handshake import (
    HeadError,
    Refusal,
    accept_key,
    check_upgrade,
    parse_head,
    parse_request_line,
    refused_subprotocol,
    switching_protocols,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
UPGRADE = {
    "host": "server.example.com",
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-key": KEY,
    "sec-websocket-version": "13",
}


def test_the_rfc_example_accept_key() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_upgrade_gets_its_accept_key() -> None:
    assert check_upgrade("GET", (1, 1), UPGRADE) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_tokens_are_case_insensitive_lists() -> None:
    headers = UPGRADE | {"upgrade": "WebSocket", "connection": "keep-alive, UPGRADE"}
    assert isinstance(check_upgrade("GET", (1, 1), headers), str)


@pytest.mark.parametrize(
    ("change", "status", "header"),
    [
        ({"upgrade": None}, 426, ("Upgrade", "websocket")),
        ({"upgrade": "h2c"}, 400, None),
        ({"connection": None}, 400, None),
        ({"connection": "keep-alive"}, 400, None),
        ({"sec-websocket-version": None}, 426, ("Sec-WebSocket-Version", "13")),
        ({"sec-websocket-version": "8"}, 426, ("Sec-WebSocket-Version", "13")),
        ({"sec-websocket-key": None}, 400, None),
        ({"sec-websocket-key": "not base64!"}, 400, None),
        ({"sec-websocket-key": base64.b64encode(b"x" * 15).decode()}, 400, None),
        ({"sec-websocket-key": base64.b64encode(b"x" * 17).decode()}, 400, None),
        ({"sec-websocket-key": "é" * 24}, 400, None),
        ({"sec-websocket-key": f"{KEY}, {KEY}"}, 400, None),  # sent twice
    ],
)
def test_malformed_upgrades_are_refused_with_a_reason(
    change: dict[str, str | None], status: int, header: tuple[str, str] | None
) -> None:
    headers = {k: v for k, v in (UPGRADE | change).items() if v is not None}
    refused = check_upgrade("GET", (1, 1), headers)
    assert isinstance(refused, Refusal)
    assert refused.status == status
    assert orjson.loads(refused.body)["error"]
    if header is not None:
        assert header in refused.headers


def test_only_get_and_http_1_1() -> None:
    post = check_upgrade("POST", (1, 1), UPGRADE)
    assert isinstance(post, Refusal) and post.status == 405
    assert ("Allow", "GET") in post.headers
    old = check_upgrade("GET", (1, 0), UPGRADE)
    assert isinstance(old, Refusal) and old.status == 400


def test_refusal_as_an_http_response() -> None:
    refused = Refusal(403, "origin not allowed", (("origin", "http://evil"),), (("X-A", "b"),))
    raw = refused.encode()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 403 Forbidden"
    assert b"Connection: close" in lines
    assert b"X-A: b" in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert orjson.loads(body) == {"error": "origin not allowed", "origin": "http://evil"}


def test_switching_protocols() -> None:
    assert switching_protocols("abc=") == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("offered", "refused"),
    [
        (None, False),
        ("", False),
        ("centrifuge-json", False),
        ("centrifuge-protobuf", True),
        ("chat, Centrifuge-Protobuf", True),  # a token of a list, in any case
        ("centrifuge-protobufx", False),
    ],
)
def test_the_protobuf_subprotocol_is_refused(offered: str | None, refused: bool) -> None:
    headers = dict(UPGRADE) if offered is None else {**UPGRADE, "sec-websocket-protocol": offered}
    reason = refused_subprotocol(headers)
    assert (reason is not None) == refused
    if reason is not None:
        assert "Protobuf" in reason and "JSON" in reason and len(reason.encode()) <= 120


# ---------------------------------------------------------------------- parsing
def test_parse_a_head() -> None:
    head = parse_head(
        b"GET /connection/uni_websocket?cf_connect=%7B%7D HTTP/1.1\r\n"
        b"Host: example\r\nUpgrade:websocket\r\nX-Many: a\r\nx-many:  b \r\n"
    )
    assert head.method == "GET"
    assert head.path == "/connection/uni_websocket"
    assert head.query == "cf_connect=%7B%7D"
    assert head.version == (1, 1)
    assert head.headers == {"host": "example", "upgrade": "websocket", "x-many": "a, b"}


def test_bare_line_feeds_are_tolerated() -> None:
    head = parse_head(b"GET / HTTP/1.1\nHost: a\n")
    assert head.headers == {"host": "a"}
    assert head.query == ""


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost : a\r\n",  # whitespace before the colon
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n",
        b"GET / HTTP/1.1\r\n: empty name\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n",
        b"GET / HTTP/1.1\r\nX\x7f: a\r\n",
        b"GET /  HTTP/1.1\r\n",
        b"GET / HTTP/1.1 extra\r\n",
        b"GET / HTTP/x\r\n",
        b"G\xc3T / HTTP/1.1\r\n",
        b"GET /\x00 HTTP/1.1\r\n",
        b"",
    ],
)
def test_malformed_heads(raw: bytes) -> None:
    with pytest.raises(HeadError):
        parse_head(raw)


def test_request_lines() -> None:
    assert parse_request_line(b"GET /a?b HTTP/1.1") == ("GET", "/a?b", (1, 1))
    assert parse_request_line(b"PRI * HTTP/2.0") == ("PRI", "*", (2, 0))
    assert parse_request_line(b"GET /a") is None
    assert parse_request_line(b"") is None


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_head_error(raw: bytes) -> None:
    try:
        head = parse_head(raw)
    except HeadError:
        return
    assert all(k == k.lower() for k in head.headers)
