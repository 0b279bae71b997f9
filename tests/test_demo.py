"""The demo routes: present only in demo mode, minting tokens and publishing sample events."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.live import LiveServer, make_settings, scaled, start_server
from tidings.config import NamespaceSettings
from tidings.demo import DEMO_NAMESPACE, DEMO_TOKEN_TTL, KINDS, ONLINE_CHANNEL, demo_settings

pytestmark = pytest.mark.integration

Start = Callable[[bool], Awaitable[LiveServer]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Starts a node with or without demo mode; stops it after the test."""
    servers: list[LiveServer] = []
    async with aiohttp.ClientSession() as http:

        async def factory(demo: bool) -> LiveServer:
            server = await start_server(make_settings({"server.demo": demo}), http)
            servers.append(server)
            return server

        yield factory
        for server in servers:
            await server.stop()


async def _post(server: LiveServer, body: Any, **kwargs: Any) -> tuple[int, Any]:
    kwargs.setdefault("headers", {"Content-Type": "application/json"})
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with server.http.post(f"{server.url}/demo/publish", data=data, **kwargs) as r:
        return r.status, await r.json() if r.content_type == "application/json" else None


async def _stream(server: LiveServer, user: str) -> aiohttp.ClientResponse:
    """An ``/events`` stream opened the way the page opens it; the connect event is read."""
    async with server.http.get(f"{server.url}/demo/token", params={"user": user}) as r:
        value = (await r.json())["token"]
    response = await server.http.get(f"{server.url}/events", params={"token": value})
    assert response.status == 200
    await _next_data(response)
    return response


async def _next_data(
    response: aiohttp.ClientResponse, timeout: float = 2.0, presence: bool = False
) -> Any:
    """The next event's data; ``join``/``leave`` of ``demo:online`` are skipped unless
    ``presence``."""
    while True:
        line = await asyncio.wait_for(response.content.readline(), scaled(timeout))
        assert line, "the stream ended"
        if line.startswith(b"data: "):
            data = orjson.loads(line[6:])
            if presence or not ("join" in data or "leave" in data):
                return data


async def _online(server: LiveServer) -> list[str]:
    async with server.http.get(f"{server.url}/demo/presence") as r:
        assert (r.status, r.headers["Cache-Control"]) == (200, "no-store")
        body = await r.json()
    assert body["channel"] == ONLINE_CHANNEL
    assert all(cid == info["client"] for cid, info in body["presence"].items())
    return sorted(info["user"] for info in body["presence"].values())


async def test_without_demo_mode_there_is_no_page_and_no_helper(start: Start) -> None:
    server = await start(False)
    helpers = ("/demo/token?user=alice", "/demo/presence", "/demo/demo.js", "/demo/demo.css")
    for path in (*helpers, "/sw.js"):
        async with server.http.get(server.url + path) as r:
            assert r.status == 404, path
    status, _ = await _post(server, {"user": "bob", "kind": "invoice.paid"})
    assert status == 404
    async with server.http.get(server.url + "/") as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        pointer = await r.json()
    assert pointer["service"] == "tidings"
    assert "/events" in pointer["endpoints"]
    assert "--demo" in pointer["demo"]


async def test_demo_mode_serves_the_page_and_its_assets(start: Start) -> None:
    server = await start(True)
    async with server.http.get(server.url + "/") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        page = await r.text()
    assert '<script src="/demo/demo.js"' in page
    assert "http://" not in page.replace("http://127.0.0.1", "")  # nothing from the network
    assets = {"/demo/demo.js": "text/javascript", "/demo/demo.css": "text/css"}
    for path, content_type in assets.items():
        async with server.http.get(server.url + path) as r:
            assert (r.status, r.content_type) == (200, content_type), path
            assert len(await r.read()) > 1000
    async with server.http.get(server.url + "/sw.js") as r:
        assert (r.status, r.content_type) == (200, "text/javascript")
        assert "Service-Worker-Allowed" not in r.headers  # its scope is "/" already
        worker = await r.text()
    assert "addEventListener('push'" in worker
    assert "addEventListener('notificationclick'" in worker


async def test_demo_token_is_short_lived_and_limited_to_the_users_channel(start: Start) -> None:
    server = await start(True)
    async with server.http.get(f"{server.url}/demo/token", params={"user": "alice"}) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"
        body = await r.json()
    assert body["channels"] == ["user#alice", ONLINE_CHANNEL]
    assert body["expires_in"] == DEMO_TOKEN_TTL
    claims = server.node.verifier.connection(body["token"])
    assert (claims.user, claims.channels) == ("alice", ("user#alice", ONLINE_CHANNEL))
    assert 0 < claims.expires_at - server.node.clock() <= DEMO_TOKEN_TTL


async def test_who_is_online_comes_from_presence_and_join_leave(start: Start) -> None:
    server = await start(True)
    assert await _online(server) == []
    alice = await _stream(server, "alice")
    own = await _next_data(alice, presence=True)
    assert (own["channel"], own["join"]["info"]["user"]) == (ONLINE_CHANNEL, "alice")
    assert await _online(server) == ["alice"]
    bob = await _stream(server, "bob")
    seen = await _next_data(alice, presence=True)
    assert (seen["channel"], seen["join"]["info"]["user"]) == (ONLINE_CHANNEL, "bob")
    assert await _online(server) == ["alice", "bob"]
    bob.close()
    gone = await _next_data(alice, presence=True)
    assert (gone["channel"], gone["leave"]["info"]["user"]) == (ONLINE_CHANNEL, "bob")
    assert await _online(server) == ["alice"]
    alice.close()


async def test_a_configured_demo_namespace_without_presence_is_said_plainly(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        {"server.demo": True}, toml='[[namespaces]]\nname = "demo"\n', tmp_path=tmp_path
    )
    async with aiohttp.ClientSession() as http:
        server = await start_server(settings, http)
        try:
            async with http.get(f"{server.url}/demo/presence") as r:
                assert r.status == 503
                assert "keeps no presence" in (await r.json())["error"]
        finally:
            await server.stop()


def test_demo_mode_adds_the_demo_namespace_unless_configured() -> None:
    assert demo_settings(make_settings({})).namespaces == []
    demo = demo_settings(make_settings({"server.demo": True}))
    assert demo.namespace("demo") == DEMO_NAMESPACE
    assert DEMO_NAMESPACE.presence and DEMO_NAMESPACE.force_push_join_leave
    own = make_settings({"server.demo": True})
    own = demo_settings(dataclasses.replace(own, namespaces=[NamespaceSettings(name="demo")]))
    assert own.namespaces == [NamespaceSettings(name="demo")]


@pytest.mark.parametrize("user", ["", "Alice", "a#b", "a,b", "a b", "x" * 33])
async def test_demo_token_refuses_names_that_are_not_plain(start: Start, user: str) -> None:
    server = await start(True)
    async with server.http.get(f"{server.url}/demo/token", params={"user": user}) as r:
        assert r.status == 400


async def test_demo_publish_reaches_that_users_stream_only(start: Start) -> None:
    server = await start(True)
    alice = await _stream(server, "alice")
    bob = await _stream(server, "bob")
    status, body = await _post(
        server, {"user": "bob", "kind": "invoice.paid", "invoice": 12, "amount": "120.00"}
    )
    assert status == 200
    event = {"kind": "invoice.paid", "invoice": 12, "amount": "120.00", "user": "bob"}
    assert body == {"result": {"channel": "user#bob", "data": event}}
    assert await _next_data(bob) == {"channel": "user#bob", "pub": {"data": event, "offset": 1}}
    status, _ = await _post(
        server, {"user": "alice", "kind": "invoice.sent", "invoice": 3, "amount": 5}
    )
    assert status == 200
    pub = (await _next_data(alice))["pub"]
    assert (pub["offset"], pub["data"]["amount"]) == (2, "5.00")  # bob's event never came


@pytest.mark.parametrize(
    "change",
    [
        {"user": "Bob"},
        {"user": 7},
        {"kind": "invoice.deleted"},
        {"invoice": 0},
        {"invoice": "12"},
        {"invoice": True},
        {"amount": "12.345"},
        {"amount": "-1"},
        {"amount": "abc"},
        {"amount": None},
    ],
)
async def test_demo_publish_validates_the_event(start: Start, change: dict[str, Any]) -> None:
    server = await start(True)
    body = {"user": "bob", "kind": "invoice.paid", "invoice": 12, "amount": "120.00", **change}
    status, answer = await _post(server, body)
    assert status == 400, answer
    assert server.node.head == 0


async def test_demo_publish_wants_json_from_this_origin(start: Start) -> None:
    server = await start(True)
    good = orjson.dumps({"user": "bob", "kind": KINDS[0], "invoice": 1, "amount": "1"})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await _post(server, good, headers=form))[0] == 415
    cross = {"Content-Type": "application/json", "Origin": "http://evil.example"}
    assert (await _post(server, good, headers=cross))[0] == 403
    assert (await _post(server, b"{nope"))[0] == 400
    assert server.node.head == 0
