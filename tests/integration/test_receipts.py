"""Read receipts on a live node (embedded log): marks from the Python SDK's ``rpc`` and
from the event streams' ``POST /events/read``, unread counts from a reconnected client,
the HTTP endpoint and the server API, the ``receipt`` events, and what is refused.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

pytest.importorskip("centrifuge", reason="needs centrifuge-python: run `make deps`")

from centrifuge import Client, ReplyError

from tests.integration.conftest import Connect, ServerFactory
from tests.integration.live import LiveServer, scaled, token
from tidings.events import RECEIPT, MemoryOutbox
from tidings.receipts import KIND

pytestmark = pytest.mark.integration

INBOX = "notes:inbox#alice"
TOML = """
[[namespaces]]
name = "notes"

[[namespaces]]
name = "quiet"
history_size = 0
"""


@pytest.fixture
async def server(serve: ServerFactory) -> LiveServer:
    server = await serve(toml=TOML)
    # The application's events, kept in memory (no events exchange without RabbitMQ).
    server.node.outbox = MemoryOutbox()
    return server


def receipts(server: LiveServer) -> list[Any]:
    outbox = server.node.outbox
    assert isinstance(outbox, MemoryOutbox)
    return list(outbox.of_type(RECEIPT))


async def published(server: LiveServer, channel: str, n: int) -> list[int]:
    """Publishes ``n`` notes to ``channel``; their offsets, from the history."""
    for i in range(n):
        await server.publish(channel, {"note": i})
    status, body = await server.api("history", {"channel": channel, "limit": -1})
    assert status == 200
    offsets = [pub["offset"] for pub in body["result"]["publications"]]
    assert len(offsets) == n
    return offsets


def bearer(user: str = "alice", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, **claims)}", "Content-Type": "application/json"}


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(url, data=data, headers=headers) as r:
        assert r.content_type == "application/json"
        return r.status, await r.json()


async def rpc_error(client: Client, method: str, data: Any) -> ReplyError:
    with pytest.raises(ReplyError) as caught:
        await client.rpc(method, data)
    return caught.value


async def test_three_of_five_seen_from_the_sdk_and_the_event_stream(
    server: LiveServer, sdk: Connect, http: aiohttp.ClientSession
) -> None:
    offsets = await published(server, INBOX, 5)
    alice = await sdk(server)
    reply = await alice.rpc("tidings.unread", {"channel": INBOX})
    assert reply.data == {"unread": 5, "exact": True}

    reply = await alice.rpc("tidings.read", {"channel": INBOX, "offsets": offsets[:2]})
    assert reply.data == {"unread": 3, "exact": True}
    # A page reading /events marks the fourth over HTTP with its stream's token.
    mark = {"channel": INBOX, "offsets": [offsets[3]]}
    assert await post(http, f"{server.url}/events/read", mark, bearer()) == (
        200,
        {"result": {"unread": 2, "exact": True}},
    )
    await alice.disconnect()

    again = await sdk(server)
    assert (await again.rpc("tidings.unread", {"channel": INBOX})).data == {
        "unread": 2,
        "exact": True,
    }
    status, body = await server.api("unread", {"user": "alice", "channel": INBOX})
    assert (status, body) == (200, {"result": {"unread": 2, "exact": True}})
    status, body = await post(http, f"{server.url}/events/unread", {"channel": INBOX}, bearer())
    assert (status, body) == (200, {"result": {"unread": 2, "exact": True}})
    # Other users' positions are their own.
    status, body = await server.api("unread", {"user": "bob", "channel": INBOX})
    assert body["result"]["unread"] == 5

    first, second = receipts(server)
    assert first["type"] == "receipt" and first["user"] == "alice"
    assert first["channel"] == INBOX and first["offsets"] == offsets[:2]
    assert first["upto"] == 0 and first["client"] and first["node"] == server.node.worker
    assert second["offsets"] == [offsets[3]] and second["client"] == ""
    assert first["id"] != second["id"]
    assert server.node.ledger.count(KIND) == 1


async def test_upto_marks_everything_before(server: LiveServer, sdk: Connect) -> None:
    offsets = await published(server, INBOX, 5)
    alice = await sdk(server)
    reply = await alice.rpc("tidings.read", {"channel": INBOX, "upto": offsets[2]})
    assert reply.data == {"unread": 2, "exact": True}
    reply = await alice.rpc("tidings.read", {"channel": INBOX, "offsets": [offsets[4]]})
    assert reply.data == {"unread": 1, "exact": True}
    assert [e["upto"] for e in receipts(server)] == [offsets[2], 0]


async def test_a_subscribed_channel_may_be_marked_and_not_before(
    server: LiveServer, sdk: Connect
) -> None:
    (offset,) = await published(server, "news", 1)
    alice = await sdk(server)
    error = await rpc_error(alice, "tidings.read", {"channel": "news", "offsets": [offset]})
    assert error.code == 103
    sub = alice.new_subscription("news")
    await sub.subscribe()
    await sub.ready(timeout=scaled(5))
    reply = await alice.rpc("tidings.read", {"channel": "news", "offsets": [offset]})
    assert reply.data == {"unread": 0, "exact": True}


async def test_forged_and_unknown_receipts_are_refused_and_nothing_applied(
    server: LiveServer, sdk: Connect
) -> None:
    offsets = await published(server, INBOX, 3)
    bobs = await published(server, "notes:inbox#bob", 1)
    alice = await sdk(server)
    # Another user's publications.
    forged = {"channel": "notes:inbox#bob", "offsets": bobs}
    assert (await rpc_error(alice, "tidings.read", forged)).code == 103
    assert (await rpc_error(alice, "tidings.unread", {"channel": "notes:inbox#bob"})).code == 103
    # Offsets that are not publications of the channel held here: none of the mark applies.
    unknown = {"channel": INBOX, "offsets": [offsets[0], offsets[-1] + 100]}
    error = await rpc_error(alice, "tidings.read", unknown)
    assert error.code == 107 and str(offsets[-1] + 100) in error.message
    other = {"channel": INBOX, "offsets": bobs}  # a real offset, of another channel
    assert (await rpc_error(alice, "tidings.read", other)).code == 107
    past = {"channel": INBOX, "upto": server.node.head + 1}
    assert (await rpc_error(alice, "tidings.read", past)).code == 107
    # Malformed requests.
    for data in (
        None,
        [1],
        {"channel": INBOX},
        {"channel": INBOX, "offsets": ["1"]},
        {"channel": INBOX, "offsets": [1], "user": "bob"},
        {"channel": "bad name", "offsets": [1]},
    ):
        assert (await rpc_error(alice, "tidings.read", data)).code == 107, data
    # Namespaces: unknown, and one without history to count against.
    assert (await rpc_error(alice, "tidings.unread", {"channel": "nowhere:x#alice"})).code == 102
    assert (await rpc_error(alice, "tidings.unread", {"channel": "quiet:x#alice"})).code == 108
    assert (await alice.rpc("tidings.unread", {"channel": INBOX})).data["unread"] == 3
    assert receipts(server) == []
    assert server.node.ledger.count(KIND) == 0


async def test_the_http_endpoint_refuses_what_it_must(
    server: LiveServer, http: aiohttp.ClientSession
) -> None:
    offsets = await published(server, INBOX, 2)
    url = f"{server.url}/events/read"
    mark = {"channel": INBOX, "offsets": offsets[:1]}
    status, body = await post(http, url, mark, {"Content-Type": "application/json"})
    assert (status, body["code"]) == (401, 101)
    assert (await post(http, url, mark, {**bearer(), "Authorization": "Bearer nope"}))[0] == 401
    assert (await post(http, url, mark, {**bearer(), "Origin": "https://evil.example"}))[0] == 403
    form = {**bearer(), "Content-Type": "application/x-www-form-urlencoded"}
    assert (await post(http, url, mark, form))[0] == 415
    assert (await post(http, url, b"{not json", bearer()))[0] == 400
    huge = {"channel": INBOX, "offsets": list(range(1, 5000))}
    assert (await post(http, url, huge, bearer()))[0] == 413
    forged = {"channel": "notes:inbox#bob", "offsets": offsets[:1]}
    status, body = await post(http, url, forged, bearer())
    assert (status, body["code"]) == (403, 103)
    unknown = {"channel": INBOX, "offsets": [offsets[-1] + 7]}
    status, body = await post(http, url, unknown, bearer())
    assert (status, body["code"]) == (400, 107)
    # A channel of the token's own (the stream's channels) may be marked.
    (news,) = await published(server, "news", 1)
    status, body = await post(
        http, url, {"channel": "news", "offsets": [news]}, bearer(channels=["news"])
    )
    assert (status, body) == (200, {"result": {"unread": 0, "exact": True}})
    assert len(receipts(server)) == 1


async def test_the_server_api_method_checks_its_request(server: LiveServer) -> None:
    assert (await server.api("unread", {"channel": INBOX}))[1]["error"]["code"] == 107
    assert (await server.api("unread", {"user": "alice"}))[1]["error"]["code"] == 107
    bad = {"user": "alice", "channel": "quiet:x#alice"}
    assert (await server.api("unread", bad))[1]["error"]["code"] == 108
    assert (await server.api("unread", {"user": "a", "channel": "no:x"}))[1]["error"]["code"] == 102
    status, _ = await server.api("unread", {"user": "alice", "channel": INBOX}, key="wrong")
    assert status == 401
