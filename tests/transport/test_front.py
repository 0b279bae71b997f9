"""The front: upgrades answered on the raw socket, everything else handed to aiohttp."""

from __future__ import annotations

import asyncio
import base64
import os

import orjson
import pytest

from tests.integration.live import LiveServer, scaled, token, wait_until
from tests.transport.raw import RawConnection, frame, upgrade_head
from tidings.protocol.handshake import accept_key
from tidings.protocol.wsframes import Opcode
from tidings.transport import front
from tidings.transport.websocket import UniWebSocketConnection, WebSocketConnection

pytestmark = pytest.mark.integration

CONNECT = {"id": 1, "connect": {"token": token("alice")}}


def _commands(*commands: object) -> bytes:
    return frame(Opcode.TEXT, b"\n".join(orjson.dumps(c) for c in commands))


async def _only_connection(server: LiveServer) -> WebSocketConnection:
    await wait_until(lambda: server.node.live, what="the connection")
    (conn,) = server.node.live
    assert isinstance(conn, WebSocketConnection)
    return conn


async def test_an_upgrade_is_answered_with_101_and_the_accept_key(server: LiveServer) -> None:
    raw = await RawConnection.open(server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    await raw.send(upgrade_head(server.port, key=key))
    status, headers, body = await raw.response()
    assert status == 101
    assert headers["upgrade"] == "websocket"
    assert headers["connection"].lower() == "upgrade"
    assert headers["sec-websocket-accept"] == accept_key(key)
    assert "sec-websocket-extensions" not in headers  # frames stay plain and shareable
    assert body == b""
    conn = await _only_connection(server)
    assert conn.transport.get_protocol() is conn  # nothing sits between socket and connection
    await raw.send_commands(CONNECT)
    assert "connect" in await raw.message()  # type: ignore[operator]
    raw.close()
    await wait_until(lambda: not server.node.live, what="the connection to be released")


async def test_bytes_pipelined_after_the_head_reach_the_websocket(server: LiveServer) -> None:
    raw = await RawConnection.open(server.port)
    subscribe = {"id": 2, "subscribe": {"channel": "news"}}
    await raw.send(upgrade_head(server.port) + _commands(CONNECT) + _commands(subscribe))
    assert (await raw.response())[0] == 101
    assert "connect" in await raw.message()  # type: ignore[operator]
    assert "subscribe" in await raw.message()  # type: ignore[operator]
    raw.close()


async def test_the_uni_websocket_and_its_cf_connect(server: LiveServer) -> None:
    request = orjson.dumps({"token": token("carol")}).decode()
    raw = await RawConnection.open(server.port)
    path = f"/connection/uni_websocket?cf_connect={request}"  # a raw JSON query works too
    await raw.send(upgrade_head(server.port, path))
    assert (await raw.response())[0] == 101
    assert "connect" in await raw.message()  # type: ignore[operator]
    assert isinstance(await _only_connection(server), UniWebSocketConnection)
    raw.close()


@pytest.mark.parametrize(
    ("fields", "status", "header"),
    [
        ({"Sec-WebSocket-Key": "short"}, 400, None),
        ({"Sec-WebSocket-Key": None}, 400, None),
        ({"Sec-WebSocket-Version": "8"}, 426, ("sec-websocket-version", "13")),
        ({"Sec-WebSocket-Version": None}, 426, ("sec-websocket-version", "13")),
        ({"Upgrade": None, "Connection": None}, 426, ("upgrade", "websocket")),
        ({"Upgrade": "h2c"}, 400, None),
        ({"Connection": "keep-alive"}, 400, None),
        ({"Content-Length": "5"}, 400, None),
        ({"X-Bad ": "header"}, 400, None),
    ],
)
async def test_malformed_upgrades_get_a_clear_refusal_and_the_connection_closes(
    server: LiveServer, fields: dict[str, str | None], status: int, header: tuple[str, str] | None
) -> None:
    raw = await RawConnection.open(server.port)
    await raw.send(upgrade_head(server.port, **fields))  # type: ignore[arg-type]
    got, headers, body = await raw.response()
    assert got == status, body
    assert headers["content-type"].startswith("application/json")
    assert orjson.loads(body)["error"]
    assert headers["connection"] == "close"
    if header is not None:
        assert headers[header[0]] == header[1]
    assert await raw.eof()
    assert not server.node.live


async def test_an_oversize_head_is_431(server: LiveServer) -> None:
    raw = await RawConnection.open(server.port)
    pad = "X-Pad: " + "x" * front.MAX_HEAD_BYTES + "\r\n"
    await raw.send(upgrade_head(server.port, extra=pad))
    status, _, body = await raw.response()
    assert status == 431, body
    assert await raw.eof()


async def test_an_oversize_head_is_431_before_it_ends(server: LiveServer) -> None:
    raw = await RawConnection.open(server.port)
    await raw.send(b"GET /connection/websocket HTTP/1.1\r\nX-Pad: " + b"x" * (20 * 1024))
    assert (await raw.response())[0] == 431


async def test_other_requests_are_served_by_aiohttp_with_keep_alive(server: LiveServer) -> None:
    raw = await RawConnection.open(server.port)
    for _ in range(3):
        await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await raw.response()
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})
        assert headers.get("connection", "keep-alive").lower() == "keep-alive"
    raw.close()


async def test_pipelined_requests_are_answered_in_order(server: LiveServer) -> None:
    raw = await RawConnection.open(server.port)
    await raw.send(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert (await raw.response())[0] == 200
    assert orjson.loads((await raw.response())[2]) == {"status": "ready"}
    assert (await raw.response())[0] == 404
    raw.close()


async def test_a_request_line_split_across_packets_is_routed(server: LiveServer) -> None:
    raw = await RawConnection.open(server.port)
    for part in (b"GE", b"T /heal", b"thz HTTP/1.1\r", b"\nHost: x\r\n\r\n"):
        await raw.send(part)
        await asyncio.sleep(0.01)
    assert (await raw.response())[0] == 200
    head = upgrade_head(server.port)
    other = await RawConnection.open(server.port)
    for i in range(0, len(head), 7):
        await other.send(head[i : i + 7])
    assert (await other.response())[0] == 101
    raw.close()
    other.close()


async def test_other_methods_on_websocket_paths_are_aiohttp_s(server: LiveServer) -> None:
    raw = await RawConnection.open(server.port)
    await raw.send(b"POST /connection/websocket HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert (await raw.response())[0] == 405
    raw.close()


async def test_a_long_line_that_is_not_an_upgrade_is_aiohttp_s_to_refuse(
    server: LiveServer,
) -> None:
    raw = await RawConnection.open(server.port)
    await raw.send(b"GET /" + b"a" * (front.MAX_HEAD_BYTES + 10))
    status, _, _ = await raw.response()
    assert 400 <= status < 500


async def test_an_upgrade_on_a_kept_alive_connection(server: LiveServer) -> None:
    """Pooling clients (aiohttp's ClientSession) reuse a connection aiohttp already serves:
    the aiohttp route takes the socket over, with the bytes that followed the head."""
    raw = await RawConnection.open(server.port)
    await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await raw.response())[0] == 200
    assert server.runner.server is not None
    assert len(server.runner.server.connections) == 1
    await raw.send(upgrade_head(server.port) + _commands(CONNECT))
    assert (await raw.response())[0] == 101
    assert "connect" in await raw.message()  # type: ignore[operator]
    conn = await _only_connection(server)
    assert conn.transport.get_protocol() is conn
    # aiohttp has let go of the connection entirely.
    await wait_until(lambda: not server.runner.server.connections, what="aiohttp to forget it")  # type: ignore[union-attr]
    await raw.send(frame(Opcode.PING, b"still here"))
    assert await raw.frame() == (Opcode.PONG, b"still here")
    raw.close()
    await wait_until(lambda: not server.node.live, what="the connection to be released")


async def test_a_refused_upgrade_on_a_kept_alive_connection(server: LiveServer) -> None:
    raw = await RawConnection.open(server.port)
    await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await raw.response())[0] == 200
    await raw.send(upgrade_head(server.port, Sec_WebSocket_Version="7"))
    status, headers, _ = await raw.response()
    assert status == 426
    assert headers["sec-websocket-version"] == "13"


async def test_a_silent_connection_is_closed_after_the_head_timeout(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front, "HEAD_TIMEOUT", scaled(0.2))
    raw = await RawConnection.open(server.port)
    await raw.send(b"GET /connection/websocket HTTP/1.1\r\n")
    assert await raw.eof(timeout=2)
