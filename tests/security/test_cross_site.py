"""Cross-site WebSocket hijacking and its event-stream twin: a page on another origin cannot
open a connection that rides on the user's cookies, on any client endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.security.wire import claims, sign
from tests.system.harness import Node, start_node

pytestmark = pytest.mark.integration

FOREIGN = [
    "http://evil.example",
    "https://evil.example",
    "http://127.0.0.1:{port}.evil.example",
    "http://127.0.0.1:{port}@evil.example",
    "http://localhost:{port}",
    "http://127.0.0.1:1",
    "null",
    "file://",
]
WS_PATHS = ["/connection/websocket", "/connection/uni_websocket"]


def _origin(template: str, node: Node) -> str:
    return template.format(port=node.port)


@pytest.mark.parametrize("path", WS_PATHS)
@pytest.mark.parametrize("origin", FOREIGN)
async def test_websocket_upgrade_from_a_foreign_origin_is_403(
    http: aiohttp.ClientSession, node: Node, path: str, origin: str
) -> None:
    origin = _origin(origin, node)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"ws://127.0.0.1:{node.port}{path}", origin=origin)
    assert refused.value.status == 403


async def test_websocket_from_the_same_origin_is_accepted(
    http: aiohttp.ClientSession, node: Node
) -> None:
    ws = await http.ws_connect(
        f"ws://127.0.0.1:{node.port}/connection/websocket", origin=f"http://127.0.0.1:{node.port}"
    )
    await ws.close()


def _sse_requests(node: Node) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    token = sign(claims("alice", channels=["user#alice"]))
    connect = orjson.dumps({"token": token}).decode()
    return [
        ("GET", f"{node.url}/events?token={token}", {}, None),
        ("GET", f"{node.url}/events", {"Authorization": f"Bearer {token}"}, None),
        ("GET", f"{node.url}/events", {"Cookie": f"tidings_token={token}"}, None),
        ("GET", f"{node.url}/connection/uni_sse?cf_connect={connect}", {}, None),
        ("POST", f"{node.url}/connection/uni_sse", {}, connect.encode()),
    ]


@pytest.mark.parametrize("origin", FOREIGN)
async def test_event_streams_from_a_foreign_origin_are_403(
    http: aiohttp.ClientSession, node: Node, origin: str
) -> None:
    origin = _origin(origin, node)
    for method, url, headers, body in _sse_requests(node):
        async with http.request(method, url, headers=headers | {"Origin": origin}, data=body) as r:
            assert r.status == 403, (method, url[:60], r.status)
            assert "Access-Control-Allow-Origin" not in r.headers
            assert r.content_type == "application/json"
    for path in ("/events", "/connection/uni_sse"):
        preflight = {"Origin": origin, "Access-Control-Request-Method": "GET"}
        async with http.options(f"{node.url}{path}", headers=preflight) as r:
            assert r.status == 403
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_event_streams_work_for_the_same_origin(
    http: aiohttp.ClientSession, node: Node
) -> None:
    """The same requests succeed without a foreign Origin: the 403s above are the origin's."""
    for origin in (None, f"http://127.0.0.1:{node.port}"):
        for method, url, headers, body in _sse_requests(node):
            if origin:
                headers = headers | {"Origin": origin}
            async with http.request(method, url, headers=headers, data=body) as r:
                assert r.status == 200, (method, url[:60], r.status, await r.text())
                assert r.content_type == "text/event-stream"
                first = await r.content.readuntil(b"\n\n")
                assert b'"connect"' in first


@pytest.fixture(scope="module")
def listed_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    env = {"TIDINGS_SERVER_ALLOWED_ORIGINS": "https://app.example"}
    n = start_node(Path(tmp_path_factory.mktemp("listed")), env=env)
    yield n
    n.stop()


async def test_allow_list_admits_only_the_listed_origin(
    http: aiohttp.ClientSession, listed_node: Node
) -> None:
    node = listed_node
    requests = _sse_requests(node)
    for method, url, headers, body in requests:
        async with http.request(
            method, url, headers=headers | {"Origin": "https://app.example"}, data=body
        ) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        for origin in ("https://evil.example", "https://app.example.evil.example", "null"):
            async with http.request(
                method, url, headers=headers | {"Origin": origin}, data=body
            ) as r:
                assert r.status == 403, origin
    for origin in ("https://evil.example", f"http://127.0.0.1:{node.port}"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"ws://127.0.0.1:{node.port}/connection/websocket", origin=origin)
        assert refused.value.status == 403
