"""Presence, join/leave and client publish on one node with the embedded log: the wire
exactly, the order of replies and pushes, the size limit and the server API."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, WsClient, connected, open_ws, scaled, token

pytestmark = pytest.mark.integration

TOML = """
[amqp]
max_message_bytes = 1024

[[namespaces]]
name = "room"
presence = true
join_leave = true
allow_presence_for_subscriber = true
allow_publish_for_subscriber = true

[[namespaces]]
name = "lobby"
join_leave = true
force_push_join_leave = true
"""


@pytest.fixture
async def server(serve: ServerFactory) -> LiveServer:
    return await serve(toml=TOML)


async def test_join_comes_after_the_joiners_reply_and_reaches_listeners(
    server: LiveServer,
) -> None:
    alice, _ = await connected(server)
    await alice.send({"id": 2, "subscribe": {"channel": "room:1", "join_leave": True}})
    # Alice asked for join/leave, so her own join follows her subscribe reply.
    reply, join = await messages(alice, 2)
    assert reply["id"] == 2 and "subscribe" in reply
    assert join["push"]["join"]["info"]["user"] == "alice"
    bob, result = await connected(server, "bob", subscribe=("room:1",))
    info = {"user": "bob", "client": result["client"]}
    assert await alice.frame() == [{"push": {"channel": "room:1", "join": {"info": info}}}]
    await bob.ws.close()
    assert await alice.frame() == [{"push": {"channel": "room:1", "leave": {"info": info}}}]


async def messages(client: WsClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages, however they were split into frames."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        out += await client.frame()
    assert len(out) == count, out
    return out


async def test_client_publish_is_a_log_event_with_the_publisher_info(server: LiveServer) -> None:
    alice, result = await connected(server, subscribe=("room:1",), info={"n": 1})
    await alice.send({"id": 3, "publish": {"channel": "room:1", "data": {"text": "hi"}}})
    info = {"user": "alice", "client": result["client"], "conn_info": {"n": 1}}
    pub = {"data": {"text": "hi"}, "offset": 1, "info": info}
    # The log delivers before it returns: the publication, then the reply.
    assert await messages(alice, 2) == [
        {"push": {"channel": "room:1", "pub": pub}},
        {"id": 3, "publish": {}},
    ]
    window = server.node.history.window("room:1")
    assert window is not None and window.offsets() == [1]


async def test_oversized_publish_is_106_and_publishes_nothing(server: LiveServer) -> None:
    alice, _ = await connected(server, subscribe=("room:1",))
    await alice.send({"id": 3, "publish": {"channel": "room:1", "data": "x" * 2000}})
    (reply,) = await alice.frame()
    assert reply["id"] == 3 and reply["error"]["code"] == 106
    assert "amqp.max_message_bytes" in reply["error"]["message"]
    assert server.node.head == 0


async def test_presence_through_the_server_api(server: LiveServer) -> None:
    # Kept referenced: a collected client closes its socket and leaves.
    clients = [
        await connected(server, subscribe=("room:1",)),
        await connected(server, "bob", subscribe=("room:1",)),
    ]
    status, body = await server.api("presence_stats", {"channel": "room:1"})
    assert (status, body) == (200, {"result": {"num_clients": 2, "num_users": 2}})
    status, body = await server.api("presence", {"channel": "room:1"})
    assert status == 200
    assert sorted(i["user"] for i in body["result"]["presence"].values()) == ["alice", "bob"]
    status, body = await server.api("presence", {"channel": "news"})
    assert (status, body["error"]["code"]) == (200, 108)
    assert len(clients) == 2


async def test_push_only_clients_get_forced_joins_without_an_id(server: LiveServer) -> None:
    uni = await open_ws(server, "/connection/uni_websocket")
    await uni.ws.send_str(orjson.dumps({"token": token("carol", channels=["lobby:1"])}).decode())
    assert "connect" in await uni.message()
    carol_join = await uni.message()
    assert carol_join["channel"] == "lobby:1" and carol_join["join"]["info"]["user"] == "carol"
    async with server.http.get(
        f"{server.url}/events", params={"token": token("dave", channels=["lobby:1"])}
    ) as stream:
        # dave's own connect event, then his join, as a data line without an id.
        seen: list[bytes] = []
        while not any(b'"join"' in line and b"dave" in line for line in seen):
            seen.append(await asyncio.wait_for(stream.content.readline(), scaled(2)))
        (join,) = [line for line in seen if b'"join"' in line]
        assert join.startswith(b"data: {")
        assert orjson.loads(join[len(b"data: ") :])["join"]["info"]["user"] == "dave"
        assert not any(line.startswith(b"id:") and b"join" in line for line in seen)
        # ... and carol, on the uni WebSocket, learns that dave joined.
        dave_join = await uni.message()
        assert dave_join["join"]["info"]["user"] == "dave"
    assert (await uni.message())["leave"]["info"]["user"] == "dave"
