"""The server API methods beyond publishing: history, server commands, channels, batch."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, connected, wait_until
from tidings.commands import COMMAND_HEADER

pytestmark = pytest.mark.integration

HISTORY_TOML = """
[[namespaces]]
name = "feed"
allow_history_for_subscriber = true

[[namespaces]]
name = "live"
history_size = 0
"""


@pytest.fixture
async def hserver(serve: ServerFactory) -> LiveServer:
    return await serve(toml=HISTORY_TOML)


async def result(server: LiveServer, method: str, body: Any) -> Any:
    status, answer = await server.api(method, body)
    assert status == 200 and "result" in answer, answer
    return answer["result"]


# ---------------------------------------------------------------------------- history
async def test_history_pages(hserver: LiveServer) -> None:
    for n in range(5):
        await hserver.publish("feed:a", {"n": n})
    await hserver.publish("feed:b", "other")
    epoch = hserver.node.log.epoch
    page = await result(hserver, "history", {"channel": "feed:a", "limit": 2})
    assert page == {
        "publications": [{"data": {"n": 0}, "offset": 1}, {"data": {"n": 1}, "offset": 2}],
        "epoch": epoch,
        "offset": 6,
    }
    newest = await result(hserver, "history", {"channel": "feed:a", "limit": 1, "reverse": True})
    assert newest["publications"] == [{"data": {"n": 4}, "offset": 5}]
    since = {"offset": 3, "epoch": epoch}
    rest = await result(hserver, "history", {"channel": "feed:a", "limit": -1, "since": since})
    assert [p["offset"] for p in rest["publications"]] == [4, 5]
    only_position = await result(hserver, "history", {"channel": "feed:a"})
    assert only_position == {"publications": [], "epoch": epoch, "offset": 6}


async def test_history_errors(hserver: LiveServer) -> None:
    await hserver.publish("feed:a", 1)
    cases = [
        ({"channel": "live:a"}, 108),
        ({"channel": "nope:a"}, 102),
        ({"channel": "feed:a", "limit": 5, "since": {"offset": 0, "epoch": "other"}}, 112),
        ({"channel": "feed:a", "reverse": True, "since": {"offset": 0}}, 107),
    ]
    for body, code in cases:
        status, answer = await hserver.api("history", body)
        assert (status, answer["error"]["code"]) == (200, code), (body, answer)


async def test_history_remove_forgets_and_fails_later_recoveries(hserver: LiveServer) -> None:
    for n in range(3):
        await hserver.publish("feed:a", n)
    epoch = hserver.node.log.epoch
    assert await result(hserver, "history_remove", {"channel": "feed:a"}) == {}
    page = await result(hserver, "history", {"channel": "feed:a", "limit": -1})
    assert page["publications"] == []
    # The removal took a position of its own: a client that saw offset 1 cannot recover.
    client, _ = await connected(hserver)
    await client.send(
        {"id": 2, "subscribe": {"channel": "feed:a", "recover": True, "offset": 1, "epoch": epoch}}
    )
    reply = (await client.reply(2))["subscribe"]
    assert reply["was_recovering"] is True and "recovered" not in reply
    _, answer = await hserver.api("history_remove", {"channel": "live:a"})
    assert answer["error"]["code"] == 108


# ---------------------------------------------------------------------------- connections
async def test_server_subscribe_and_unsubscribe(server: LiveServer) -> None:
    alice, _ = await connected(server)
    other, _ = await connected(server, "bob")
    assert await result(server, "subscribe", {"user": "alice", "channel": "news"}) == {}
    push = await alice.message()
    assert push["push"]["channel"] == "news"
    assert push["push"]["subscribe"]["recoverable"] is True
    await server.publish("news", "hello")
    assert (await alice.message())["push"]["pub"]["data"] == "hello"
    await other.silent(0.05)
    # A server-side subscription cannot be left by the client itself.
    await alice.send({"id": 5, "unsubscribe": {"channel": "news"}})
    assert await alice.reply(5) == {"id": 5, "unsubscribe": {}}
    assert server.node.hub.subscribers("news") == 1

    assert await result(server, "unsubscribe", {"user": "alice", "channel": "news"}) == {}
    assert await alice.message() == {
        "push": {"channel": "news", "unsubscribe": {"code": 2000, "reason": "server"}}
    }
    assert server.node.hub.subscribers("news") == 0


async def test_server_subscribe_one_client_only(server: LiveServer) -> None:
    first, info = await connected(server)
    second, _ = await connected(server)
    body = {"user": "alice", "channel": "news", "client": info["client"]}
    await result(server, "subscribe", body)
    assert "subscribe" in (await first.message())["push"]
    await second.silent(0.05)


async def test_disconnect(server: LiveServer) -> None:
    keep, kept = await connected(server)
    gone, _ = await connected(server)
    bob, _ = await connected(server, "bob")
    await result(server, "disconnect", {"user": "alice", "whitelist": [kept["client"]]})
    assert await gone.close_code() == 3503
    await keep.silent(0.05)
    await bob.silent(0.05)
    custom = {"code": 3011, "reason": "moving you"}
    await result(server, "disconnect", {"user": "alice", "disconnect": custom})
    assert await keep.closed() == (3011, "moving you")


async def test_refresh(server: LiveServer) -> None:
    client, _ = await connected(server)
    await result(server, "refresh", {"user": "alice", "expired": True})
    assert await client.close_code() == 3005


async def test_refresh_sets_a_new_expiry(server: LiveServer) -> None:
    _client, _ = await connected(server, ttl=None)
    (session,) = [s for sessions in server.node.admission.sessions.values() for s in sessions]
    expire_at = int(server.node.clock()) + 600
    await result(server, "refresh", {"user": "alice", "expire_at": expire_at})
    await wait_until(lambda: session._expires_at == expire_at, what="the new expiry")


async def test_forged_commands_from_the_exchange_are_rejected(server: LiveServer) -> None:
    client, _ = await connected(server)
    body = b'{"kind":"disconnect","issued_at":%d,"user":"alice"}' % int(server.node.clock())
    await server.node.log.append("tidings.api", body, {COMMAND_HEADER: "0" * 64})
    await client.silent(0.1)
    metrics = await server.metrics()
    assert metrics["tidings_events_rejected_total", (("kind", "bad_command"),)] == 1


# ---------------------------------------------------------------------------- this node
async def test_channels(server: LiveServer) -> None:
    _alice = await connected(server, subscribe=("news", "sport"))
    _bob = await connected(server, "bob", subscribe=("news",))
    assert await result(server, "channels", {}) == {
        "channels": {"news": {"num_clients": 2}, "sport": {"num_clients": 1}}
    }
    assert await result(server, "channels", {"pattern": "sp*"}) == {
        "channels": {"sport": {"num_clients": 1}}
    }


async def test_b64data(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("news",))
    b64 = base64.b64encode(b'{"x":1}').decode()
    await result(server, "publish", {"channel": "news", "b64data": b64})
    assert (await client.message())["push"]["pub"]["data"] == {"x": 1}


# ---------------------------------------------------------------------------- batch
async def test_batch(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("news",))
    status, answer = await server.api(
        "batch",
        {
            "commands": [
                {"publish": {"channel": "news", "data": 1}},
                {"publish": {"channel": "nope:x", "data": 2}},
                {"teleport": {}},
                {"channels": {}},
                "junk",
            ]
        },
    )
    assert status == 200
    replies = answer["replies"]
    assert replies[0] == {"publish": {}}
    assert replies[1]["error"]["code"] == 102
    assert replies[2]["error"]["code"] == 104
    assert replies[3] == {"channels": {"channels": {"news": {"num_clients": 1}}}}
    assert replies[4]["error"]["code"] == 107
    assert (await client.message())["push"]["pub"]["data"] == 1


async def test_batch_needs_a_list_of_commands(server: LiveServer) -> None:
    status, answer = await server.api("batch", {"commands": {"publish": {}}})
    assert status == 200 and answer["error"]["code"] == 107
