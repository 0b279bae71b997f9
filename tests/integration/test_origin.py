"""Cross-site checks on the WebSocket upgrade."""

from __future__ import annotations

import aiohttp
import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, open_ws, token

pytestmark = pytest.mark.integration

PATHS = ["/connection/websocket", "/connection/uni_websocket"]


async def _accepted(server: LiveServer, path: str, origin: str | None) -> bool:
    try:
        client = await open_ws(server, path, origin=origin)
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 403
        return False
    await client.ws.close()
    return True


@pytest.mark.parametrize("path", PATHS)
async def test_same_origin_and_no_origin_are_accepted_by_default(
    server: LiveServer, path: str
) -> None:
    assert await _accepted(server, path, f"http://127.0.0.1:{server.port}")
    assert await _accepted(server, path, None)  # not a browser: no cross-site risk


async def test_same_origin_behind_a_tls_terminator(server: LiveServer) -> None:
    """Host and port decide, not the scheme: a TLS proxy in front keeps the Host header."""
    headers = {"Host": "app.example"}
    client = await open_ws(server, origin="https://app.example", headers=headers)
    await client.ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await open_ws(server, origin="https://app.example:8443", headers=headers)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://127.0.0.1.evil.example:{port}",
        "http://localhost:{port}",  # another host name is another origin
        "http://127.0.0.1:1",  # another port too
        "null",
        "file://",
    ],
)
async def test_cross_origin_is_refused_with_403(server: LiveServer, path: str, origin: str) -> None:
    origin = origin.format(port=server.port)
    assert not await _accepted(server, path, origin)
    # The refusal explains itself to whoever looks at it without upgrading.
    async with server.http.get(f"{server.url}{path}", headers={"Origin": origin}) as r:
        assert r.status == 403
        assert await r.json() == {"error": "origin not allowed", "origin": origin}
    metrics = await server.metrics()
    assert metrics["tidings_connections_refused_total", (("reason", "origin"),)] == 2


async def test_allow_list(serve: ServerFactory) -> None:
    server = await serve(
        {"server.allowed_origins": ["https://app.example", "http://localhost:3000"]}
    )
    assert await _accepted(server, PATHS[0], "https://app.example")
    assert await _accepted(server, PATHS[0], "https://APP.example/")
    assert await _accepted(server, PATHS[0], "http://localhost:3000")
    assert await _accepted(server, PATHS[0], None)
    assert not await _accepted(server, PATHS[0], "https://app.example:8443")
    assert not await _accepted(server, PATHS[0], "https://evil.example")
    # With an allow-list, the node's own origin must be listed too.
    assert not await _accepted(server, PATHS[0], f"http://127.0.0.1:{server.port}")


async def test_wildcard_allows_any_origin(serve: ServerFactory) -> None:
    server = await serve({"server.allowed_origins": ["*"]})
    assert await _accepted(server, PATHS[0], "https://anything.example")


async def test_an_accepted_cross_origin_client_works(serve: ServerFactory) -> None:
    server = await serve({"server.allowed_origins": ["https://app.example"]})
    client = await open_ws(server, origin="https://app.example")
    await client.send({"id": 1, "connect": {"token": token()}})
    assert "client" in (await client.message())["connect"]
