"""The proxies against a real HTTP backend (an aiohttp app in the test) and real sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, free_port, open_ws, scaled, token, wait_until

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass
class Backend:
    """The application's backend: records each request, answers with ``answers[path]``
    (an object sent as JSON, bytes sent as they are, or a coroutine function of the body)."""

    url: str = ""
    answers: dict[str, Any] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.seen.append((request.path, body, dict(request.headers)))
        answer = self.answers.get(request.path, {"result": {}})
        if callable(answer):
            answer = await answer(body)
        if isinstance(answer, web.StreamResponse):
            return answer
        raw = answer if isinstance(answer, bytes) else orjson.dumps(answer)
        return web.Response(body=raw, content_type="application/json")

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body, _ in self.seen if p == path]


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    state = Backend()
    app = web.Application()
    app.router.add_post("/{event}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


def proxy_settings(url: str, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "proxy.connect_endpoint": f"{url}/connect",
        "proxy.refresh_endpoint": f"{url}/refresh",
        "proxy.subscribe_endpoint": f"{url}/subscribe",
        "proxy.rpc_endpoint": f"{url}/rpc",
        "proxy.publish_endpoint": f"{url}/publish",
        "proxy.http_headers": ["Cookie", "Authorization"],
        "proxy.connect_timeout": scaled(0.5),
        "proxy.rpc_timeout": scaled(0.5),
    }
    values.update({f"proxy.{k}": v for k, v in extra.items()})
    return values


BACKEND_NAMESPACE = (
    "[[namespaces]]\nname = 'room'\nproxy_subscribe = true\n"
    "[[namespaces]]\nname = 'chat'\nproxy_publish = true\n"
)


@pytest.fixture
async def proxied(serve: ServerFactory, backend: Backend) -> LiveServer:
    return await serve(proxy_settings(backend.url), toml=BACKEND_NAMESPACE)


async def connect(server: LiveServer, body: dict[str, Any] | None = None, **kw: Any) -> Any:
    client = await open_ws(server, **kw)
    await client.send({"id": 1, "connect": body or {}})
    return client, await client.reply(1)


class TestConnect:
    async def test_without_a_token_the_backend_authenticates(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        backend.answers["/connect"] = {
            "result": {"user": "56", "info": {"name": "Ann"}, "data": {"hi": 1}, "meta": {"t": 7}}
        }
        client, reply = await connect(
            proxied, {"name": "js", "data": {"page": "x"}}, headers={"Cookie": "session=abc"}
        )
        result = reply["connect"]
        assert result["data"] == {"hi": 1} and "expires" not in result
        [(path, body, headers)] = backend.seen
        assert path == "/connect"
        assert body == {
            "client": result["client"],
            "transport": "websocket",
            "protocol": "json",
            "encoding": "json",
            "name": "js",
            "data": {"page": "x"},
        }
        assert headers["Cookie"] == "session=abc"
        assert headers["X-Forwarded-For"] == "127.0.0.1"
        # Later requests carry the user and the meta the connect proxy attached.
        await client.send({"id": 2, "rpc": {"method": "whoami"}})
        await client.reply(2)
        [rpc] = backend.bodies("/rpc")
        assert (rpc["user"], rpc["meta"], rpc["method"]) == ("56", {"t": 7}, "whoami")

    async def test_a_token_does_not_ask_the_backend(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        _, reply = await connect(proxied, {"token": token("alice")})
        assert "connect" in reply and backend.seen == []

    async def test_error_answer_reaches_the_client(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        backend.answers["/connect"] = {"error": {"code": 1000, "message": "who are you"}}
        _, reply = await connect(proxied)
        assert reply["error"] == {"code": 1000, "message": "who are you"}

    async def test_disconnect_answer_closes_with_its_code(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        backend.answers["/connect"] = {"disconnect": {"code": 4501, "reason": "banned"}}
        client = await open_ws(proxied)
        await client.send({"id": 1, "connect": {}})
        assert await client.closed() == (4501, "banned")

    @pytest.mark.parametrize("answer", [b"<html>oops</html>", b'{"result": {"user": 5}}'])
    async def test_a_bad_answer_is_a_temporary_internal_error(
        self, proxied: LiveServer, backend: Backend, answer: bytes
    ) -> None:
        backend.answers["/connect"] = answer
        _, reply = await connect(proxied)
        assert reply["error"] == {"code": 100, "message": "internal", "temporary": True}
        metrics = await proxied.metrics()
        key = ("tidings_proxy_requests_total", (("event", "connect"), ("result", "failed")))
        assert metrics[key] == 1

    async def test_an_http_error_status_is_an_internal_error(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        async def fail(_: Any) -> web.Response:
            return web.Response(status=500, text="boom")

        backend.answers["/connect"] = fail
        _, reply = await connect(proxied)
        assert reply["error"]["code"] == 100

    async def test_a_slow_backend_times_out(self, proxied: LiveServer, backend: Backend) -> None:
        async def slow(_: Any) -> Any:
            await asyncio.sleep(scaled(3))
            return {"result": {"user": "late"}}

        backend.answers["/connect"] = slow
        started = time.monotonic()
        _, reply = await connect(proxied)
        assert reply["error"]["code"] == 100
        assert time.monotonic() - started < scaled(2)

    async def test_a_backend_that_is_down(self, serve: ServerFactory) -> None:
        server = await serve(proxy_settings(f"http://127.0.0.1:{free_port()}"))
        _, reply = await connect(server)
        assert reply["error"] == {"code": 100, "message": "internal", "temporary": True}
        # The node still serves everyone else.
        _, reply = await connect(server, {"token": token("alice")})
        assert "connect" in reply

    async def test_push_only_websocket(self, proxied: LiveServer, backend: Backend) -> None:
        backend.answers["/connect"] = {"result": {"user": "56", "channels": ["news"]}}
        client = await open_ws(proxied, "/connection/uni_websocket", headers={"Cookie": "s=1"})
        await client.send({"name": "bare"})
        connect = (await client.message())["connect"]
        assert "news" in connect["subs"]
        await proxied.publish("news", {"n": 1})
        assert (await client.message())["pub"]["data"] == {"n": 1}
        [(_, body, headers)] = backend.seen
        assert (body["transport"], body["name"]) == ("uni_websocket", "bare")
        assert headers["Cookie"] == "s=1"

    async def test_push_only_websocket_refused(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        backend.answers["/connect"] = {"error": {"code": 403, "message": "no session"}}
        client = await open_ws(proxied, "/connection/uni_websocket")
        await client.send({})
        assert await client.closed() == (3507, "no session")

    async def test_event_stream_authenticated_by_cookie(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        backend.answers["/connect"] = {"result": {"user": "56", "channels": ["news"]}}
        url = f"{proxied.url}/events"
        async with proxied.http.get(url, headers={"Cookie": "session=abc"}) as response:
            assert response.status == 200
            first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), scaled(2))
            assert b'"news"' in first
        [(_, body, headers)] = backend.seen
        assert body["transport"] == "sse" and headers["Cookie"] == "session=abc"

    async def test_event_stream_refused_by_the_backend(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        backend.answers["/connect"] = {"error": {"code": 403, "message": "no session"}}
        async with proxied.http.get(f"{proxied.url}/events") as response:
            assert response.status == 403
            body = await response.json()
            assert body["code"] == 3507 and body["error"] == "no session"
        backend.answers["/connect"] = b"not json"
        async with proxied.http.get(f"{proxied.url}/events") as response:
            assert response.status == 503
            assert (await response.json())["code"] == 3004


class TestSubscribe:
    async def test_allowed_with_data_then_refused(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        async def decide(body: dict[str, Any]) -> Any:
            if body["channel"] == "room:open":
                return {"result": {"data": {"topic": "open"}}}
            return {"error": {"code": 403, "message": "not a member"}}

        backend.answers["/subscribe"] = decide
        client, _ = await connect(proxied, {"token": token("alice")})
        await client.send(
            {"id": 2, "subscribe": {"channel": "room:open", "data": {"why": 1}}},
            {"id": 3, "subscribe": {"channel": "room:closed"}},
        )
        replies = {}
        while len(replies) < 2:
            for message in await client.frame():
                if message:
                    replies[message["id"]] = message
        assert replies[2]["subscribe"]["data"] == {"topic": "open"}
        assert replies[3]["error"] == {"code": 403, "message": "not a member"}
        first, second = backend.bodies("/subscribe")
        assert (first["user"], first["channel"]) == ("alice", "room:open")
        assert first["data"] == {"why": 1}
        assert second["channel"] == "room:closed"
        # The subscription is real: a publication reaches it.
        await proxied.publish("room:open", {"n": 1})
        [push] = await client.frame()
        assert push["push"]["pub"]["data"] == {"n": 1}


class TestRpc:
    async def test_by_method(self, serve: ServerFactory, backend: Backend) -> None:
        server = await serve(proxy_settings(backend.url, rpc_methods=["sum"]))

        async def add(body: dict[str, Any]) -> Any:
            return {"result": {"data": {"sum": sum(body["data"])}}}

        backend.answers["/rpc"] = add
        client, _ = await connect(server, {"token": token("alice")})
        await client.send({"id": 2, "rpc": {"method": "sum", "data": [1, 2, 3]}})
        assert await client.reply(2) == {"id": 2, "rpc": {"data": {"sum": 6}}}
        await client.send({"id": 3, "rpc": {"method": "drop_tables"}})
        assert (await client.reply(3))["error"]["code"] == 104
        assert len(backend.bodies("/rpc")) == 1

    async def test_error_and_disconnect_answers(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        backend.answers["/rpc"] = {"error": {"code": 1002, "message": "busy", "temporary": True}}
        client, _ = await connect(proxied, {"token": token("alice")})
        await client.send({"id": 2, "rpc": {"method": "m"}})
        assert (await client.reply(2))["error"] == {
            "code": 1002,
            "message": "busy",
            "temporary": True,
        }
        backend.answers["/rpc"] = {"disconnect": {"code": 4000, "reason": "come back"}}
        await client.send({"id": 3, "rpc": {"method": "m"}})
        assert await client.closed() == (4000, "come back")

    async def test_a_slow_call_does_not_hold_the_others(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        async def answer(body: dict[str, Any]) -> Any:
            if body["method"] == "slow":
                await asyncio.sleep(scaled(3))
            return {"result": {"data": body["method"]}}

        backend.answers["/rpc"] = answer
        client, _ = await connect(proxied, {"token": token("alice")})
        await client.send(
            {"id": 2, "rpc": {"method": "slow"}}, {"id": 3, "rpc": {"method": "fast"}}
        )
        assert await client.reply(3) == {"id": 3, "rpc": {"data": "fast"}}
        assert (await client.reply(2, timeout=3))["error"]["code"] == 100  # its timeout


class TestRefresh:
    async def test_the_backend_extends_then_ends_the_connection(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        soon = int(time.time()) + 1
        backend.answers["/connect"] = {"result": {"user": "56", "expire_at": soon}}
        refreshes: list[int] = []

        async def refresh(body: dict[str, Any]) -> Any:
            refreshes.append(1)
            if len(refreshes) == 1:
                return {"result": {"expire_at": int(time.time()) + 1}}
            return {"result": {"expired": True}}

        backend.answers["/refresh"] = refresh
        client, reply = await connect(proxied)
        assert "expires" not in reply["connect"]
        await wait_until(lambda: refreshes, timeout=scaled(4), what="a refresh")
        assert backend.bodies("/refresh")[0]["user"] == "56"
        code, _ = await client.closed(timeout=4)
        assert code == 3005 and len(refreshes) == 2


async def test_connections_share_one_http_session(
    proxied: LiveServer, backend: Backend
) -> None:
    for _ in range(3):
        await connect(proxied)
    session = proxied.node.proxy._http
    assert isinstance(session, aiohttp.ClientSession) and not session.closed


class TestPublish:
    async def test_the_backend_decides_and_rewrites(
        self, proxied: LiveServer, backend: Backend
    ) -> None:
        async def moderate(body: dict[str, Any]) -> Any:
            text = body["data"]["text"]
            if text == "spam":
                return {"error": {"code": 1003, "message": "not allowed here"}}
            return {"result": {"data": {"text": text.upper(), "by": body["user"]}}}

        backend.answers["/publish"] = moderate
        client, _ = await connect(proxied, {"token": token("alice", info={"n": "Al"})})
        await client.send({"id": 2, "subscribe": {"channel": "chat:1"}})
        await client.reply(2)
        await client.send({"id": 3, "publish": {"channel": "chat:1", "data": {"text": "spam"}}})
        assert (await client.reply(3))["error"] == {"code": 1003, "message": "not allowed here"}
        await client.send({"id": 4, "publish": {"channel": "chat:1", "data": {"text": "hi"}}})
        got: dict[str, Any] = {}
        while "reply" not in got or "push" not in got:
            for message in await client.frame():
                if message.get("id") == 4:
                    got["reply"] = message
                elif "push" in message:
                    got["push"] = message["push"]
        assert got["reply"] == {"id": 4, "publish": {}}
        assert got["push"]["pub"]["data"] == {"text": "HI", "by": "alice"}
        first = backend.bodies("/publish")[0]
        assert (first["channel"], first["info"]) == ("chat:1", {"n": "Al"})

    async def test_a_backend_that_is_down_publishes_nothing(self, serve: ServerFactory) -> None:
        server = await serve(
            proxy_settings(f"http://127.0.0.1:{free_port()}"), toml=BACKEND_NAMESPACE
        )
        client, _ = await connect(server, {"token": token("alice")})
        await client.send({"id": 2, "subscribe": {"channel": "chat:1"}})
        await client.reply(2)
        await client.send({"id": 3, "publish": {"channel": "chat:1", "data": {"text": "hi"}}})
        assert (await client.reply(3))["error"]["code"] == 100
        await client.silent()
