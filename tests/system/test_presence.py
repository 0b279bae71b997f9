"""Presence, join/leave and client publish across nodes and workers that share nothing but
a real RabbitMQ (the control exchange; see tidings.cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest

from tests.system.harness import (
    AMQP_URL,
    API_KEY,
    SECRET,
    TIME_SCALE,
    Node,
    delete_amqp,
    start_node,
    unique,
)
from tidings.auth import mint_token

T = TypeVar("T")

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]

CONFIG = """
[[namespaces]]
name = "room"
presence = true
join_leave = true
allow_presence_for_subscriber = true
allow_publish_for_subscriber = true
"""
#: Short heartbeats, so that a dead node's clients leave within seconds.
HEARTBEAT, TTL = 0.5, 1.5
CLUSTER_ENV = {
    "TIDINGS_CLUSTER_HEARTBEAT_INTERVAL": str(HEARTBEAT),
    "TIDINGS_CLUSTER_PRESENCE_TTL": str(TTL),
}


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    exchange, stream = unique("test.events"), unique("test.log")
    yield exchange, stream
    delete_amqp([exchange, exchange + ".control"], [stream])


def node(tmp_path: Path, names: tuple[str, str], workers: int = 1) -> Node:
    exchange, stream = names
    args = ["--amqp-url", AMQP_URL, "--exchange", exchange, "--stream", stream]
    return start_node(
        tmp_path, *args, "--workers", str(workers), config=CONFIG, env=CLUSTER_ENV
    )


class Peer:
    """A protocol client that sends commands and keeps every reply and push."""

    def __init__(self, url: str, user: str) -> None:
        self.url, self.user = url, user
        self.client_id = ""
        self.replies: dict[int, dict[str, Any]] = {}
        self.pushes: list[dict[str, Any]] = []
        self._next = 1
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.url)
        self._task = asyncio.get_running_loop().create_task(self._read())
        token = mint_token(SECRET, self.user, info={"name": self.user.title()})
        reply = await self.call("connect", {"token": token})
        self.client_id = reply["connect"]["client"]

    async def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._ws is not None
        cid, self._next = self._next, self._next + 1
        await self._ws.send_bytes(orjson.dumps({"id": cid, method: body}))
        await until(lambda: cid in self.replies, f"the reply to {method}")
        return self.replies[cid]

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            for line in msg.data.split("\n"):
                obj = orjson.loads(line)
                if not obj:
                    await self._ws.send_str("{}")
                elif "push" in obj:
                    self.pushes.append(obj["push"])
                elif "id" in obj:
                    self.replies[obj["id"]] = obj

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [p[kind] for p in self.pushes if kind in p]

    async def presence(self, channel: str) -> set[str]:
        reply = await self.call("presence", {"channel": channel})
        assert "error" not in reply, reply
        return {info["user"] for info in reply["presence"]["presence"].values()}

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        if self._http is not None:
            await self._http.close()


async def until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout * TIME_SCALE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def settled(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, within: float
) -> tuple[T, float]:
    """Polls ``read()`` until ``done`` accepts its value; returns it and the seconds it took."""
    start = time.monotonic()
    deadline = start + within * TIME_SCALE
    while True:
        value = await read()
        if done(value):
            return value, time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} is {value!r} after {within}s")
        await asyncio.sleep(0.05)


async def presence_becomes(peer: Peer, channel: str, users: set[str], within: float) -> float:
    """Polls ``presence`` until it lists exactly ``users``; returns the seconds it took."""
    _, took = await settled(
        lambda: peer.presence(channel),
        lambda seen: seen == users,
        f"presence, not {users},",
        within,
    )
    return took


def api(url: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """One server API call (blocking: the nodes are other processes)."""
    request = urllib.request.Request(
        f"{url}/api/{method}", data=json.dumps(body).encode(), headers={"X-API-Key": API_KEY}
    )
    with urllib.request.urlopen(request) as response:
        result: dict[str, Any] = json.loads(response.read())["result"]
        return result


async def until_nodes(url: str, count: int, within: float) -> list[dict[str, Any]]:
    """``info``'s nodes once there are ``count`` of them."""

    async def read() -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = api(url, "info", {})["nodes"]
        return nodes

    nodes, _ = await settled(read, lambda n: len(n) == count, f"info, not {count} nodes,", within)
    return nodes


async def test_presence_join_leave_and_publish_across_nodes(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    channel = unique("room:invoice")
    a, b = node(tmp_path, names), node(tmp_path, names, workers=2)
    alice, bob, carol = Peer(a.ws_url, "alice"), Peer(b.ws_url, "bob"), Peer(b.ws_url, "carol")
    try:
        await alice.start()
        sub = await alice.call("subscribe", {"channel": channel, "join_leave": True})
        assert "error" not in sub, sub
        for peer in (bob, carol):  # on node B, on whichever of its two workers
            await peer.start()
            assert "error" not in await peer.call("subscribe", {"channel": channel})
        # The joins reach node A, and every client sees the whole cluster.
        await until(lambda: len(alice.events("join")) >= 3, "the joins at alice")
        joined = {j["info"]["user"]: j["info"] for j in alice.events("join")}
        expected = {"user": "bob", "client": bob.client_id, "conn_info": {"name": "Bob"}}
        assert joined["bob"] == expected
        for peer in (alice, bob, carol):
            await presence_becomes(peer, channel, {"alice", "bob", "carol"}, within=HEARTBEAT * 2)
        stats = await bob.call("presence_stats", {"channel": channel})
        assert stats["presence_stats"] == {"num_clients": 3, "num_users": 3}

        # A client publication on node B goes through the log to node A, with its info.
        reply = await bob.call("publish", {"channel": channel, "data": {"text": "paid"}})
        assert reply == {"id": reply["id"], "publish": {}}
        await until(lambda: alice.events("pub"), "the publication at alice")
        (pub,) = alice.events("pub")
        assert pub["data"] == {"text": "paid"} and pub["offset"] > 0
        assert pub["info"]["client"] == bob.client_id and pub["info"]["user"] == "bob"
        denied = await bob.call("publish", {"channel": unique("room:other"), "data": 1})
        assert denied["error"]["code"] == 103

        # A leave on node B reaches node A.
        await bob.stop()
        await until(lambda: alice.events("leave"), "bob's leave at alice")
        assert alice.events("leave")[0]["info"]["client"] == bob.client_id
        await presence_becomes(carol, channel, {"alice", "carol"}, within=HEARTBEAT * 2)
    finally:
        for peer in (alice, bob, carol):
            await peer.stop()
        a.stop()
        b.stop()


async def test_a_dead_node_s_clients_leave_within_the_ttl(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    channel = unique("room:invoice")
    a, c = node(tmp_path, names), node(tmp_path, names)
    alice, carol = Peer(a.ws_url, "alice"), Peer(c.ws_url, "carol")
    try:
        await alice.start()
        await alice.call("subscribe", {"channel": channel, "join_leave": True})
        await carol.start()
        await carol.call("subscribe", {"channel": channel})
        await presence_becomes(alice, channel, {"alice", "carol"}, within=HEARTBEAT * 2)
        # info lists every live worker: node C's figures come with its heartbeats.
        nodes = await until_nodes(a.url, 2, within=HEARTBEAT * 4)
        assert sum(n["num_clients"] for n in nodes) == 2 and nodes[0]["uid"] != nodes[1]["uid"]
        c.proc.send_signal(signal.SIGKILL)  # no leave, no bye: only silence
        c.proc.wait(10)
        took = await presence_becomes(alice, channel, {"alice"}, within=(TTL + HEARTBEAT) * 2)
        assert took <= TTL + HEARTBEAT + 1.0 * TIME_SCALE, took
        await until(lambda: alice.events("leave"), "carol's leave at alice")
        assert alice.events("leave")[0]["info"]["user"] == "carol"
        # The server API of node A answers from the same cluster view.
        assert api(a.url, "presence_stats", {"channel": channel}) == {
            "num_clients": 1,
            "num_users": 1,
        }
        assert len(await until_nodes(a.url, 1, within=1.0)) == 1
    finally:
        for peer in (alice, carol):
            await peer.stop()
        a.stop()
        c.stop()
