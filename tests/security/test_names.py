"""Hostile names on every transport of a real node: channel names and user ids with control
characters (NUL included), lone surrogates, bytes that are not UTF-8 or over the length
limit are refused with the documented error, and the node goes on serving."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from tests.security.wire import claims, connected, open_ws, sign
from tests.system.harness import Node

pytestmark = pytest.mark.integration

BAD_CHANNELS = {
    "nul": "news\x00",
    "escape": "a\x1b[2Jb",
    "c1": "a\x85b",
    "surrogate": "\ud800",
    "too-long": "x" * 256,
    "too-long-utf8": "é" * 128,
}
BAD_USERS = {
    "nul": "al\x00ice",
    "newline": "alice\nbob",
    "surrogate": "\udfff",
    "too-long": "u" * 256,
}


def _bad_tokens() -> dict[str, str]:
    tokens = {f"sub-{k}": sign(claims(v)) for k, v in BAD_USERS.items()}
    tokens |= {f"channels-{k}": sign(claims(channels=["news", v])) for k, v in BAD_CHANNELS.items()}
    return tokens


BAD_TOKENS = _bad_tokens()


async def _healthy(http: aiohttp.ClientSession, node: Node) -> None:
    async with http.get(f"{node.url}/healthz") as r:
        assert r.status == 200
    text = node.log_text()
    # aiohttp's own parser logs the requests it answers 400 itself; tidings logs no error.
    assert "/tidings/" not in "".join(line for line in text.splitlines() if 'File "' in line)
    assert " ERROR " not in "".join(line for line in text.splitlines() if "tidings." in line)


SENDABLE = {k: v for k, v in BAD_CHANNELS.items() if k != "surrogate"}


@pytest.mark.parametrize("channel", SENDABLE.values(), ids=SENDABLE.keys())
async def test_subscribe_to_a_bad_name_is_107(
    http: aiohttp.ClientSession, node: Node, channel: str
) -> None:
    client = await connected(http, node, sign(claims()))
    await client.send({"id": 2, "subscribe": {"channel": channel}})
    reply = await client.reply(2, timeout=3)
    assert reply["error"]["code"] == 107, reply
    assert "channel name" in reply["error"]["message"]
    # The connection stays usable.
    await client.send({"id": 3, "subscribe": {"channel": "news"}})
    assert "subscribe" in await client.reply(3, timeout=3)
    await client.ws.close()
    await _healthy(http, node)


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff\\ud800"], ids=["lone", "reversed"])
async def test_a_lone_surrogate_escape_closes_3501(
    http: aiohttp.ClientSession, node: Node, escape: str
) -> None:
    # Valid UTF-8 on the wire, but JSON for a string no UTF-8 text can hold: the frame
    # decoder refuses it as it refuses any frame that is not JSON.
    client = await connected(http, node, sign(claims()))
    await client.ws.send_str('{"id":2,"subscribe":{"channel":"' + escape + '"}}')
    assert (await client.closed(timeout=3))[0] == 3501
    await _healthy(http, node)


async def test_a_text_frame_that_is_not_utf8_closes_1007(
    http: aiohttp.ClientSession, node: Node
) -> None:
    client = await connected(http, node, sign(claims()))
    await client.ws.send_frame(b'{"id":2,"subscribe":{"channel":"a\xffb"}}', aiohttp.WSMsgType.TEXT)
    assert (await client.closed(timeout=3))[0] == 1007
    await _healthy(http, node)


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_tokens_naming_bad_names_are_refused_on_every_transport(
    http: aiohttp.ClientSession, node: Node, token: str
) -> None:
    # Bidirectional WebSocket: closed with 3500, as any invalid token.
    client = await open_ws(http, node)
    await client.send({"id": 1, "connect": {"token": token}})
    assert (await client.closed(timeout=3))[0] == 3500
    # Push-only WebSocket, the connect request as its first message.
    client = await open_ws(http, node, "/connection/uni_websocket")
    await client.ws.send_str(orjson.dumps({"token": token}).decode())
    assert (await client.closed(timeout=3))[0] == 3500
    # Event streams: an HTTP refusal that tells an EventSource to stop.
    request = quote(orjson.dumps({"token": token}).decode())
    for path in (f"/connection/uni_sse?cf_connect={request}", f"/events?token={token}"):
        async with http.get(f"{node.url}{path}") as r:
            assert r.status == 401, path
            body = await r.json()
            assert body["code"] == 3500 and "claim" in body["error"], body
    await _healthy(http, node)


async def _raw_request(node: Node, head: bytes, until: bytes = b"\r\n\r\n") -> tuple[int, bytes]:
    """Sends a hand-made request (bytes no HTTP client would send); returns the status and
    the answer up to ``until`` (its head by default)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(head + b"\r\n\r\n")
        await writer.drain()
        data = b""
        while until not in data:
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            if not chunk:
                break
            data += chunk
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (b"/events?token=%FF%FE%00", b""),
        (b"/events?token=\xff\xfe", b""),
        (b"/connection/uni_sse?cf_connect=%7B%22token%22:%22%FF%22%7D", b""),
        (b"/connection/uni_sse?cf_connect=%FF", b""),
        (b"/events", b"\r\nAuthorization: Bearer \xff\x00x"),
    ],
    ids=["query-escaped", "query-raw", "cf-connect-token", "cf-connect-not-json", "header"],
)
async def test_invalid_bytes_in_the_query_or_headers_are_refused(
    http: aiohttp.ClientSession, node: Node, target: bytes, headers: bytes
) -> None:
    status, _ = await _raw_request(
        node, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1" + headers
    )
    assert status in (400, 401), status
    await _healthy(http, node)


async def test_a_last_event_id_that_is_not_utf8_is_an_unrecoverable_position(
    http: aiohttp.ClientSession, node: Node
) -> None:
    token = sign(claims(channels=["news"])).encode()
    status, data = await _raw_request(
        node,
        b"GET /events?token=" + token + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Last-Event-ID: \xff\xfe:1",
        until=b"event: gap",
    )
    # The epoch cannot be this log's: the client is told its position is lost.
    assert status == 200, data
    assert b"event: gap" in data, data
    await _healthy(http, node)


async def test_server_api_names(http: aiohttp.ClientSession, node: Node) -> None:
    from tests.system.harness import API_KEY

    cases: list[tuple[Any, str]] = [
        ({"channel": "a\x00b", "data": 1}, "control character"),
        ({"channel": "x" * 256, "data": 1}, "over the limit of 255"),
        ({"channels": ["news", "a\x7f"], "data": 1}, "control character"),
    ]
    for body, message in cases:
        method = "broadcast" if "channels" in body else "publish"
        async with http.post(
            f"{node.url}/api/{method}", data=orjson.dumps(body), headers={"X-API-Key": API_KEY}
        ) as r:
            # A method's error is an answer of HTTP 200 (Centrifugo's API); in a broadcast,
            # the refused channel's own entry says it, and the valid ones are published.
            assert r.status == 200
            answer = await r.json()
            if method == "broadcast":
                first, error = answer["result"]["responses"]
                assert first == {"result": {}}
                answer = error
            assert answer["error"]["code"] == 107
            assert message in answer["error"]["message"]
    async with http.post(
        f"{node.url}/api/publish",
        data=b'{"channel": "\\ud800", "data": 1}',
        headers={"X-API-Key": API_KEY},
    ) as r:
        assert r.status == 400
    await _healthy(http, node)


async def test_method_names_that_are_no_method(http: aiohttp.ClientSession, node: Node) -> None:
    from tests.system.harness import API_KEY

    headers = {"X-API-Key": API_KEY}
    # In the path: percent-escaped NUL, bytes that are not UTF-8, far too long.
    for path in ("pub%00lish", "pub%FFlish", "m" * 300):
        async with http.post(f"{node.url}/api/{path}", data=b"{}", headers=headers) as r:
            assert r.status == 404, path
            assert "no server API method" in (await r.json())["error"]["message"]
    # As a key of a batch: error 104 in that command's place, the others run.
    body = {"commands": [{"pub\x00lish": {}}, {"info": {}}]}
    async with http.post(f"{node.url}/api/batch", data=orjson.dumps(body), headers=headers) as r:
        assert r.status == 200
        first, second = (await r.json())["replies"]
        assert first["error"]["code"] == 104 and "info" in second
    await _healthy(http, node)
