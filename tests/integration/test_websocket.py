"""The bidirectional WebSocket transport over a real socket, asserted frame by frame."""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, connected, open_ws, token, wait_until
from tidings import __version__
from tidings.record import Record
from tidings.router import CHANNEL_HEADER
from tidings.transport.websocket import WebSocketConnection

pytestmark = pytest.mark.integration

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def test_connect_reply_has_the_exact_shape(server: LiveServer) -> None:
    client = await open_ws(server)
    await client.send({"id": 1, "connect": {"token": token("alice", ttl=0), "name": "js"}})
    reply = await client.message()
    assert set(reply) == {"id", "connect"}
    result = reply["connect"]
    assert UUID.match(result.pop("client"))
    assert reply == {"id": 1, "connect": {"version": __version__, "ping": 25, "pong": True}}


async def test_connect_reply_carries_expiry_of_an_expiring_token(server: LiveServer) -> None:
    client = await open_ws(server)
    await client.send({"id": 1, "connect": {"token": token("alice", ttl=600)}})
    result = (await client.message())["connect"]
    assert result["expires"] is True
    assert 598 <= result["ttl"] <= 600


async def test_connect_and_subscribe_in_one_frame_are_answered_in_order(
    server: LiveServer,
) -> None:
    client = await open_ws(server)
    await client.send(
        {"connect": {"token": token("alice", ttl=0), "data": {"a": 1}, "name": "js"}, "id": 1},
        {"subscribe": {"channel": "news", "flag": 1}, "id": 2},
        {"subscribe": {"channel": "sport", "flag": 1}, "id": 3},
    )
    replies = await client.frame()
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert "client" in replies[0]["connect"]
    epoch = server.node.log.epoch
    position = {"recoverable": True, "positioned": True, "epoch": epoch, "offset": 0}
    assert replies[1:] == [{"id": 2, "subscribe": position}, {"id": 3, "subscribe": position}]


async def test_publication_arrives_as_a_push(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("news",))
    await server.publish("news", {"title": "hello", "n": [1, 2]})
    assert await client.frame() == [
        {"push": {"channel": "news", "pub": {"data": {"title": "hello", "n": [1, 2]}, "offset": 1}}}
    ]
    await server.publish("sport", {"ignored": True})
    await server.publish("news", "plain string")
    assert await client.frame() == [
        {"push": {"channel": "news", "pub": {"data": "plain string", "offset": 3}}}
    ]


async def test_server_side_subscriptions_come_from_the_token(server: LiveServer) -> None:
    client, result = await connected(server, channels=["alice-feed", "news"])
    epoch = server.node.log.epoch
    position = {"recoverable": True, "positioned": True, "epoch": epoch, "offset": 0}
    assert result["subs"] == {"alice-feed": position, "news": position}
    await server.publish("news", 1)
    assert await client.frame() == [{"push": {"channel": "news", "pub": {"data": 1, "offset": 1}}}]
    # A server-side subscription cannot be dropped by the client.
    await client.send({"id": 7, "unsubscribe": {"channel": "news"}})
    assert await client.message() == {"id": 7, "unsubscribe": {}}
    await server.publish("news", 2)
    assert await client.frame() == [{"push": {"channel": "news", "pub": {"data": 2, "offset": 2}}}]


async def test_unsubscribe_stops_publications(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("news", "sport"))
    await client.send({"id": 9, "unsubscribe": {"channel": "news"}})
    assert await client.message() == {"id": 9, "unsubscribe": {}}
    await server.publish("news", "gone")
    await server.publish("sport", "still here")
    assert await client.frame() == [
        {"push": {"channel": "sport", "pub": {"data": "still here", "offset": 2}}}
    ]
    # Unsubscribing from a channel the client is not on still gets a reply (the SDK needs it).
    await client.send({"id": 10, "unsubscribe": {"channel": "never"}})
    assert await client.message() == {"id": 10, "unsubscribe": {}}
    assert server.node.hub.subscriptions == 1


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ({"subscribe": {"channel": "nope:x"}}, {"code": 102, "message": "unknown channel"}),
        ({"subscribe": {"channel": "$secret"}}, {"code": 103, "message": "permission denied"}),
        ({"subscribe": {"channel": "inbox#bob"}}, {"code": 103, "message": "permission denied"}),
        ({"subscribe": {"channel": "news"}}, {"code": 105, "message": "already subscribed"}),
        ({"subscribe": {}}, {"code": 107, "message": "channel is required"}),
        (
            {"publish": {"channel": "news", "data": 1}},
            {"code": 103, "message": "permission denied"},
        ),
        # History is on for "news" (the defaults) but no namespace option lets clients read it.
        ({"history": {"channel": "news"}}, {"code": 103, "message": "permission denied"}),
        ({"rpc": {"method": "x"}}, {"code": 108, "message": "not available"}),
    ],
)
async def test_command_errors(server: LiveServer, command: dict, error: dict) -> None:
    client, _ = await connected(server, subscribe=("news",))
    await client.send({"id": 5, **command})
    assert await client.message() == {"id": 5, "error": error}
    # The connection survives a command error.
    await client.send({"id": 6, "subscribe": {"channel": "inbox#alice"}})
    assert (await client.message())["id"] == 6


async def test_user_limited_channel_admits_its_user(server: LiveServer) -> None:
    client, _ = await connected(server, "bob", subscribe=("inbox#bob",))
    await server.publish("inbox#bob", {"to": "bob"})
    assert (await client.message())["push"]["pub"]["data"] == {"to": "bob"}


async def test_private_channel_with_a_subscription_token(server: LiveServer) -> None:
    client, _ = await connected(server, "bob")
    sub_token = token("bob", channel="$secret", ttl=0)
    await client.send({"id": 2, "subscribe": {"channel": "$secret", "token": sub_token}})
    assert (await client.message())["id"] == 2
    wrong = token("carol", channel="$other", ttl=0)
    await client.send({"id": 3, "subscribe": {"channel": "$other", "token": wrong}})
    assert await client.message() == {
        "id": 3,
        "error": {"code": 103, "message": "permission denied"},
    }


async def test_expired_connection_token_gets_error_109(server: LiveServer) -> None:
    client = await open_ws(server)
    await client.send({"id": 1, "connect": {"token": token("alice", ttl=-10)}})
    assert await client.message() == {"id": 1, "error": {"code": 109, "message": "token expired"}}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"id":1,"connect":{"token":"not.a.jwt"}}', 3500),
        ('{"id":1,"connect":{"token":"' + token(channel="news") + '"}}', 3500),
        ('{"id":1,"connect":{}}', 3500),
        ('{"id":1,"subscribe":{"channel":"news"}}', 3501),
        ("this is not json", 3501),
        ("[1, 2, 3]", 3501),
    ],
)
async def test_refused_connects_close_with_a_terminal_code(
    server: LiveServer, frame: str, code: int
) -> None:
    client = await open_ws(server)
    await client.ws.send_str(frame)
    assert await client.close_code() == code


async def test_a_second_connect_is_a_bad_request(server: LiveServer) -> None:
    client, _ = await connected(server)
    await client.send({"id": 2, "connect": {"token": token("alice")}})
    assert await client.close_code() == 3501
    await wait_until(lambda: server.node.connections == 0, what="the session to be released")


async def test_recovery_over_raw_frames(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("news",))
    await server.publish("news", "a")
    pub = (await client.message())["push"]["pub"]
    await client.ws.close()
    for data in ("b", "c"):
        await server.publish("news", data)
    epoch = server.node.log.epoch
    again = await open_ws(server)
    await again.send(
        {"id": 1, "connect": {"token": token("alice")}},
        {
            "id": 2,
            "subscribe": {
                "channel": "news",
                "recover": True,
                "offset": pub["offset"],
                "epoch": epoch,
            },
        },
    )
    replies = await again.frame()
    assert replies[1] == {
        "id": 2,
        "subscribe": {
            "recoverable": True,
            "positioned": True,
            "epoch": epoch,
            "offset": 3,
            "was_recovering": True,
            "recovered": True,
            "publications": [{"data": "b", "offset": 2}, {"data": "c", "offset": 3}],
        },
    }
    # A client from another epoch is told plainly that recovery failed.
    third = await open_ws(server)
    await third.send(
        {"id": 1, "connect": {"token": token("alice")}},
        {"id": 2, "subscribe": {"channel": "news", "recover": True, "offset": 1, "epoch": "x"}},
    )
    sub = (await third.frame())[1]["subscribe"]
    assert sub["was_recovering"] is True
    assert "recovered" not in sub and "publications" not in sub


async def test_server_pings_and_pong_timeout(serve: ServerFactory) -> None:
    server = await serve({"client.ping_interval": 1, "client.pong_timeout": 1})
    ponger, result = await connected(server, "alice")
    silent, _ = await connected(server, "bob")
    assert result["ping"] == 1 and result["pong"] is True
    uni = await open_ws(server, "/connection/uni_websocket")
    await uni.ws.send_str(orjson.dumps({"token": token("carol")}).decode())
    assert "connect" in await uni.message()

    async def answer_pings() -> int:
        pings = 0
        while pings < 2:
            assert await ponger.message(timeout=2) == {}
            pings += 1
            await ponger.send({})
        return pings

    answering = asyncio.create_task(answer_pings())
    assert await silent.message(timeout=2) == {}  # the ping, left unanswered
    assert await silent.close_code(timeout=3) == 3012
    assert await answering == 2
    await ponger.send({"id": 3, "subscribe": {"channel": "news"}})
    assert "subscribe" in await ponger.reply(3)  # still connected after two ping rounds
    # A push-only client is pinged too, and never expected to answer.
    assert [await uni.message(timeout=2) for _ in range(2)] == [{}, {}]
    assert not uni.ws.closed


async def test_stale_connection_is_closed(serve: ServerFactory) -> None:
    server = await serve({"client.stale_timeout": 1})
    client = await open_ws(server)
    assert await client.close_code(timeout=3) == 3502


async def test_broadcast_pushes_to_one_client_are_coalesced_into_one_frame(
    server: LiveServer,
) -> None:
    client, _ = await connected(server, subscribe=("a", "b", "c"))
    other, _ = await connected(server, "bob", subscribe=("b",))
    status, body = await server.api("broadcast", {"channels": ["a", "b", "c"], "data": {"x": 1}})
    assert (status, body) == (200, {"result": {"responses": [{"result": {}}] * 3}})
    pub = {"data": {"x": 1}, "offset": 1}
    assert await client.frame() == [
        {"push": {"channel": "a", "pub": pub}},
        {"push": {"channel": "b", "pub": pub}},
        {"push": {"channel": "c", "pub": pub}},
    ]
    assert await other.frame() == [{"push": {"channel": "b", "pub": pub}}]
    await client.silent()


async def test_a_batch_of_records_goes_out_as_one_frame_per_connection(
    server: LiveServer,
) -> None:
    """A log delivering several records at once (RabbitMQ's prefetch) yields one write."""
    client, _ = await connected(server, subscribe=("news",))
    node = server.node
    now = node.clock()
    records = [
        Record(node.head + i, "rk", b'{"n":%d}' % i, now, {CHANNEL_HEADER: "news"})
        for i in range(1, 6)
    ]
    node.on_records(records)
    frame = await client.frame()
    assert [m["push"]["pub"] for m in frame] == [
        {"data": {"n": i}, "offset": i} for i in range(1, 6)
    ]
    await client.silent()


async def test_publications_within_one_loop_iteration_share_a_frame(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("news",))
    # The embedded log's append never suspends, so these three run in one iteration.
    for n in range(1, 4):
        await server.node.publish(["news"], {"n": n})
    frame = await client.frame()
    assert [m["push"]["pub"] for m in frame] == [
        {"data": {"n": n}, "offset": n} for n in range(1, 4)
    ]
    await client.silent()


async def test_a_single_push_is_the_shared_prebuilt_frame(server: LiveServer) -> None:
    alice, _ = await connected(server, subscribe=("news",))
    bob, _ = await connected(server, "bob", subscribe=("news",))
    writes: list[bytes] = []
    assert len(server.node.live) == 2
    for conn in server.node.live:
        assert isinstance(conn, WebSocketConnection)
        original = conn.transport.write

        def spy(data: bytes, original=original) -> None:  # type: ignore[no-untyped-def]
            writes.append(data)
            original(data)

        conn.transport.write = spy  # type: ignore[method-assign]
    await server.publish("news", {"n": 1})
    assert len(writes) == 2
    assert writes[0] is writes[1]  # one encoded frame for every subscriber
    assert await alice.frame() == await bob.frame()


async def test_closing_the_client_frees_its_subscriptions(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("news", "sport"), channels=["alice-feed"])
    assert server.node.hub.subscriptions == 3
    assert server.node.connections == 1
    await client.ws.close()
    await wait_until(lambda: not server.node.live, what="the connection to be released")
    assert server.node.hub.subscriptions == 0
    assert server.node.connections == 0
