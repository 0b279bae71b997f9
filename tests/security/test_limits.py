"""Every limit holds against a client that pushes on it, and every refusal says which limit
it was (close reason, error message or HTTP body), so an operator can tell them apart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.security.wire import claims, connected, open_ws, sign
from tests.system.harness import Node, metrics_of, start_node

pytestmark = pytest.mark.integration


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[object]:
    started: list[Node] = []

    def factory(*args: str, **env: str) -> Node:
        node = start_node(tmp_path, *args, env=env)
        started.append(node)
        return node

    yield factory
    for node in started:
        node.stop()


async def test_frame_over_max_frame_bytes_is_1009(http: aiohttp.ClientSession, node: Node) -> None:
    client = await connected(http, node, sign(claims()))
    await client.ws.send_str('{"id":2,"subscribe":{"channel":"' + "x" * 5000 + '"}}')
    code, reason = await client.closed(timeout=3)
    assert code == 1009, (code, reason)
    # Before connect too: a huge first frame never reaches the token check.
    early = await open_ws(http, node)
    await early.ws.send_str('{"id":1,"connect":{"token":"' + "e" * 10_000 + '"}}')
    assert (await early.closed(timeout=3))[0] == 1009


async def test_commands_per_frame_is_3501_naming_the_limit(
    http: aiohttp.ClientSession, node: Node
) -> None:
    client = await open_ws(http, node)
    commands = [{"id": 1, "connect": {"token": sign(claims())}}]
    commands += [{"id": 2 + i, "subscribe": {"channel": f"c{i}"}} for i in range(5)]
    await client.send(*commands)  # six commands; the node allows five
    code, reason = await client.closed(timeout=3)
    assert code == 3501
    assert "commands" in reason and "5" in reason, reason
    # Blank lines do not count, and do not help either.
    again = await open_ws(http, node)
    frame = "\n\n".join(orjson.dumps(c).decode() for c in commands)
    await again.ws.send_str(frame)
    assert (await again.closed(timeout=3))[0] == 3501


async def test_subscriptions_per_connection_is_106(http: aiohttp.ClientSession, node: Node) -> None:
    client = await connected(http, node, sign(claims()), "a", "b", "c")
    await client.send({"id": 9, "subscribe": {"channel": "d"}})
    reply = await client.message(timeout=3)
    assert reply["error"]["code"] == 106
    assert "subscriptions" in reply["error"]["message"]
    # Leaving one frees a slot; the limit counts live subscriptions, not attempts.
    await client.send({"id": 10, "unsubscribe": {"channel": "a"}})
    assert await client.message(timeout=3) == {"id": 10, "unsubscribe": {}}
    await client.send({"id": 11, "subscribe": {"channel": "d"}})
    assert "subscribe" in await client.message(timeout=3)
    # Server-side channels over the limit refuse the connection itself (3505).
    greedy = await open_ws(http, node)
    token = sign(claims("greedy", channels=["a", "b", "c", "d"]))
    await greedy.send({"id": 1, "connect": {"token": token}})
    code, reason = await greedy.closed(timeout=3)
    assert code == 3505
    assert "max_subscriptions" in reason, reason


async def test_connections_per_user_is_3504(http: aiohttp.ClientSession, make_node: object) -> None:
    node = make_node(TIDINGS_CLIENT_MAX_CONNECTIONS_PER_USER="2")  # type: ignore[operator]
    keep = [await connected(http, node, sign(claims("alice"))) for _ in range(2)]
    third = await open_ws(http, node)
    await third.send({"id": 1, "connect": {"token": sign(claims("alice"))}})
    code, reason = await third.closed(timeout=3)
    assert code == 3504
    assert "max_connections_per_user" in reason, reason
    # SSE counts against the same limit, and says so in its HTTP refusal.
    async with http.get(f"{node.url}/events", params={"token": sign(claims("alice"))}) as r:
        assert r.status == 503
        body = await r.json()
        assert body["code"] == 3504 and "max_connections_per_user" in body["error"]
    other = await connected(http, node, sign(claims("bob")))  # per user, not global
    await other.ws.close()
    assert len(keep) == 2


async def test_connections_per_ip_per_second_is_429(
    http: aiohttp.ClientSession, make_node: object
) -> None:
    node = make_node(TIDINGS_CLIENT_CONNECTIONS_PER_IP_PER_SECOND="3")  # type: ignore[operator]
    refused = None
    for _ in range(10):
        try:
            ws = await http.ws_connect(f"ws://127.0.0.1:{node.port}/connection/websocket")
        except aiohttp.WSServerHandshakeError as exc:
            refused = exc
            break
        await ws.close()
    assert refused is not None and refused.status == 429
    async with http.get(f"{node.url}/events", params={"token": sign(claims())}) as r:
        if r.status == 429:  # unless the second turned meanwhile
            assert "connections_per_ip_per_second" in (await r.json())["error"]
            assert r.headers["Retry-After"] == "1"
    async with http.get(f"{node.url}/connection/websocket") as r:
        if r.status == 429:
            assert "connections_per_ip_per_second" in (await r.json())["error"]
    # The window passes: the same address is welcome again.
    await asyncio.sleep(1.1)
    ws = await http.ws_connect(f"ws://127.0.0.1:{node.port}/connection/websocket")
    await ws.close()
    assert metrics_of(node)["tidings_connections_refused_total", (("reason", "rate"),)] >= 1


async def test_total_connections_is_503(http: aiohttp.ClientSession, make_node: object) -> None:
    node = make_node(TIDINGS_CLIENT_MAX_CONNECTIONS="2")  # type: ignore[operator]
    keep = [await connected(http, node, sign(claims(f"u{i}"))) for i in range(2)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"ws://127.0.0.1:{node.port}/connection/websocket")
    assert refused.value.status == 503
    async with http.get(f"{node.url}/connection/websocket") as r:
        assert r.status == 503
        assert "client.max_connections" in (await r.json())["error"]
    async with http.get(f"{node.url}/events", params={"token": sign(claims("u9"))}) as r:
        assert r.status == 503
        assert "client.max_connections" in (await r.json())["error"]
    await keep[0].ws.close()
    # A slot freed is a slot usable again.
    for _ in range(50):
        try:
            again = await connected(http, node, sign(claims("u3")))
            break
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the freed slot was never reusable")
    await again.ws.close()


async def test_demo_token_minting_only_in_demo_mode(
    http: aiohttp.ClientSession, node: Node, make_node: object
) -> None:
    for method in ("GET", "POST"):
        async with http.request(method, f"{node.url}/demo/token", params={"user": "bob"}) as r:
            assert r.status in (404, 405), r.status
            assert "token" not in (await r.text()).lower() or r.status != 200
    async with http.post(
        f"{node.url}/demo/publish",
        json={"user": "bob", "kind": "invoice.paid", "invoice": 1, "amount": "1.00"},
    ) as r:
        assert r.status in (404, 405)
    demo = make_node("--demo")  # type: ignore[operator]
    async with http.get(f"{demo.url}/demo/token", params={"user": "bob"}) as r:
        assert r.status == 200
