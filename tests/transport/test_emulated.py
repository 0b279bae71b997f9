"""The emulated transports (``/connection/http_stream``, ``/connection/sse``) and the
emulation endpoint (``POST /emulation``) over real sockets, message by message."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, scaled, token, wait_until
from tests.transport.test_sse import SseClient
from tidings.transport.emulation import EMULATION

pytestmark = pytest.mark.integration


def connect_frame(user: str = "alice", **claims: Any) -> bytes:
    return orjson.dumps({"id": 1, "connect": {"token": token(user, **claims), "name": "test"}})


class Stream:
    """An emulated connection seen from the client: messages from the response, commands
    posted to ``/emulation`` with the ids of the connect result."""

    def __init__(self, server: LiveServer, response: aiohttp.ClientResponse, sse: bool) -> None:
        self.server = server
        self.response = response
        self._events = SseClient(response) if sse else None
        self.session = ""
        self.node = ""

    async def message(self, timeout: float = 2.0) -> Any:
        """The next message (pings included)."""
        if self._events is not None:
            return (await self._events.event(timeout)).json()
        line = await asyncio.wait_for(self.response.content.readline(), scaled(timeout))
        if not line:
            raise EOFError("the stream ended")
        assert line.endswith(b"\n") and line.strip(), line
        return orjson.loads(line)

    async def reply(self, command_id: int) -> Any:
        while True:
            message = await self.message()
            if message != {}:
                assert message.get("id") == command_id, message
                return message

    async def post(self, *commands: Any, session: str | None = None, **extra: Any) -> int:
        body = {
            "node": self.node,
            "session": self.session if session is None else session,
            "data": "\n".join(orjson.dumps(c).decode() for c in commands),
            **extra,
        }
        async with self.server.http.post(f"{self.server.url}/emulation", json=body) as r:
            return r.status

    async def ended(self) -> None:
        with pytest.raises(EOFError):
            for _ in range(100):
                await self.message()


async def open_stream(
    server: LiveServer, transport: str, frame: bytes, **kwargs: Any
) -> aiohttp.ClientResponse:
    if transport == "sse":
        return await server.http.get(
            f"{server.url}/connection/sse", params={"cf_connect": frame.decode()}, **kwargs
        )
    return await server.http.post(f"{server.url}/connection/http_stream", data=frame, **kwargs)


async def connected(server: LiveServer, transport: str, **claims: Any) -> tuple[Stream, Any]:
    response = await open_stream(server, transport, connect_frame(**claims))
    assert response.status == 200, await response.text()
    stream = Stream(server, response, transport == "sse")
    reply = await stream.reply(1)
    result = reply["connect"]
    stream.session, stream.node = result["session"], result["node"]
    return stream, result


TRANSPORTS = pytest.mark.parametrize("transport", ["http_stream", "sse"])


@TRANSPORTS
async def test_connect_then_posted_commands_answered_on_the_stream(
    server: LiveServer, transport: str
) -> None:
    stream, result = await connected(server, transport)
    content_type = "text/event-stream" if transport == "sse" else "application/json"
    assert stream.response.content_type == content_type
    assert result["pong"] is True and result["client"]
    assert len(result["session"]) >= 32 and result["session"] != result["client"]
    assert result["node"] == server.app[EMULATION].worker
    assert await stream.post({"id": 2, "subscribe": {"channel": "news"}}) == 204
    assert (await stream.reply(2))["subscribe"]["recoverable"] is True
    await server.publish("news", {"n": 1})
    push = await stream.message()
    assert push["push"]["channel"] == "news" and push["push"]["pub"]["data"] == {"n": 1}
    # Two commands in one post, answered in order.
    assert (
        await stream.post(
            {"id": 3, "unsubscribe": {"channel": "news"}}, {"id": 4, "subscribe": {"channel": "a"}}
        )
        == 204
    )
    assert "unsubscribe" in await stream.reply(3)
    assert "subscribe" in await stream.reply(4)


@TRANSPORTS
async def test_publications_arrive_in_order_on_the_stream(
    server: LiveServer, transport: str
) -> None:
    stream, _ = await connected(server, transport)
    await stream.post({"id": 2, "subscribe": {"channel": "news"}})
    await stream.reply(2)
    await server.publish("news", {"n": 1})
    await server.publish("news", {"n": 2})
    got = [(await stream.message())["push"]["pub"]["data"]["n"] for _ in range(2)]
    assert got == [1, 2]


@TRANSPORTS
async def test_a_refused_connect_is_answered_with_a_disconnect_push(
    server: LiveServer, transport: str
) -> None:
    frame = orjson.dumps({"id": 1, "connect": {"token": "not-a-token"}})
    response = await open_stream(server, transport, frame)
    assert response.status == 200
    stream = Stream(server, response, transport == "sse")
    push = await stream.message()
    assert push["push"]["disconnect"]["code"] == 3500
    assert push["push"]["disconnect"]["reconnect"] is False
    await stream.ended()
    assert server.node.connections == 0 and len(server.app[EMULATION]) == 0


async def test_an_expired_token_gets_109_and_the_stream_ends(server: LiveServer) -> None:
    response = await open_stream(server, "http_stream", connect_frame(ttl=-30))
    stream = Stream(server, response, sse=False)
    assert (await stream.message())["error"]["code"] == 109
    await stream.ended()


async def test_a_bad_first_frame_is_3501(server: LiveServer) -> None:
    response = await open_stream(server, "http_stream", b"not json")
    stream = Stream(server, response, sse=False)
    assert (await stream.message())["push"]["disconnect"]["code"] == 3501


async def test_the_sse_endpoint_needs_cf_connect(server: LiveServer) -> None:
    async with server.http.get(f"{server.url}/connection/sse") as r:
        assert r.status == 400
        assert "cf_connect" in (await r.json())["error"]


async def test_an_oversized_connect_frame_is_413(serve: ServerFactory) -> None:
    server = await serve({"client.max_frame_bytes": 1024})
    response = await open_stream(server, "http_stream", b"x" * 2000)
    assert response.status == 413


@TRANSPORTS
async def test_the_client_leaving_ends_its_session(server: LiveServer, transport: str) -> None:
    stream, _ = await connected(server, transport)
    await stream.post({"id": 2, "subscribe": {"channel": "news"}})
    await stream.reply(2)
    assert (server.node.connections, len(server.app[EMULATION])) == (1, 1)
    stream.response.close()
    await wait_until(
        lambda: server.node.connections == 0
        and server.node.hub.subscriptions == 0
        and len(server.app[EMULATION]) == 0,
        what="the session to be released",
    )
    # Its id no longer reaches anything; the answer is the SDK's "session gone" (204).
    assert await stream.post({"id": 3, "subscribe": {"channel": "b"}}) == 204


async def test_shutdown_pushes_3001_and_ends_the_stream(server: LiveServer) -> None:
    stream, _ = await connected(server, "http_stream")
    stop = asyncio.create_task(server.stop())
    push = await stream.message()
    assert push == {"push": {"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": True}}}
    await stream.ended()
    await stop


async def test_pings_want_a_pong_posted(serve: ServerFactory) -> None:
    server = await serve({"client.ping_interval": 1, "client.pong_timeout": 1})
    stream, result = await connected(server, "http_stream")
    assert result["ping"] == 1
    assert await stream.message(timeout=3) == {}
    assert await stream.post({}) == 204
    assert await stream.message(timeout=3) == {}  # the next ping: the pong kept it open
    # No pong this time: cut with 3012.
    push = await stream.message(timeout=4)
    assert push["push"]["disconnect"]["code"] == 3012


# ---------------------------------------------------------------------- the endpoint
async def test_an_unknown_session_of_this_worker_is_204_and_reaches_no_one(
    server: LiveServer,
) -> None:
    stream, _ = await connected(server, "http_stream")
    guess = stream.session[:-2] + ("AA" if not stream.session.endswith("AA") else "BB")
    assert await stream.post({"id": 2, "subscribe": {"channel": "news"}}, session=guess) == 204
    assert await stream.post({"id": 3, "subscribe": {"channel": "news"}}) == 204
    assert (await stream.reply(3))["id"] == 3  # id 2 went nowhere


async def test_an_unknown_node_is_404(server: LiveServer) -> None:
    stream, _ = await connected(server, "http_stream")
    stream.node = "tidings-9.000000000000"
    assert await stream.post({"id": 2, "subscribe": {"channel": "news"}}) == 404


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"nope", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"node":"n","session":"s"}', "data"),
        (b'{"node":"n","session":"","data":""}', "session"),
        (b'{"node":1,"session":"s","data":""}', "node"),
        (b'{"node":"n\\u0000","session":"s","data":""}', "node"),
    ],
)
async def test_a_bad_request_is_400(server: LiveServer, body: bytes, problem: str) -> None:
    async with server.http.post(f"{server.url}/emulation", data=body) as r:
        assert r.status == 400
        assert problem in (await r.json())["error"]


async def test_an_oversized_request_is_413(serve: ServerFactory) -> None:
    server = await serve({"client.max_frame_bytes": 1024})
    stream, _ = await connected(server, "http_stream")
    big = {"id": 2, "subscribe": {"channel": "x" * 1100}}
    assert await stream.post(big) == 400  # data over the frame limit
    async with server.http.post(f"{server.url}/emulation", data=b" " * 4000) as r:
        assert r.status == 413


async def test_a_foreign_origin_may_not_post(server: LiveServer) -> None:
    stream, _ = await connected(server, "http_stream")
    async with server.http.post(
        f"{server.url}/emulation",
        json={"node": stream.node, "session": stream.session, "data": "{}"},
        headers={"Origin": "http://evil.example"},
    ) as r:
        assert r.status == 403
        assert "Access-Control-Allow-Origin" not in r.headers
    for path in ("/emulation", "/connection/http_stream", "/connection/sse"):
        async with server.http.options(
            f"{server.url}{path}", headers={"Origin": "http://evil.example"}
        ) as r:
            assert r.status == 403


async def test_an_allowed_origin_gets_cors_headers(serve: ServerFactory) -> None:
    server = await serve({"server.allowed_origins": ["https://app.example"]})
    origin = {"Origin": "https://app.example"}
    async with server.http.options(f"{server.url}/emulation", headers=origin) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    response = await open_stream(server, "http_stream", connect_frame(), headers=origin)
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    stream = Stream(server, response, sse=False)
    result = (await stream.reply(1))["connect"]
    body = {"node": result["node"], "session": result["session"], "data": "{}"}
    async with server.http.post(f"{server.url}/emulation", json=body, headers=origin) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
