"""Channel permissions over real sockets: other users' channels, token-only namespaces,
unknown namespaces, and server-side subscriptions that the client can neither leave nor
widen."""

from __future__ import annotations

import aiohttp
import pytest

from tests.security.wire import (
    api_publish,
    claims,
    connected,
    pushes_within,
    sign,
)
from tests.system.harness import Node

pytestmark = pytest.mark.integration


async def _subscribe_error(
    http: aiohttp.ClientSession, node: Node, user: str, channel: str
) -> int | None:
    client = await connected(http, node, sign(claims(user)))
    await client.send({"id": 5, "subscribe": {"channel": channel}})
    reply = await client.message(timeout=3)
    await client.ws.close()
    return reply.get("error", {}).get("code")


@pytest.mark.parametrize(
    "channel",
    [
        "user#bob",
        "user#bob,carol",
        "user#alicex",
        "user#",  # no user at all
        "user#,",
        "ns_free#bob",
        "private:user#alice",  # user-limited to alice, but the namespace needs a token
    ],
)
async def test_cannot_subscribe_to_someone_elses_channel(
    http: aiohttp.ClientSession, node: Node, channel: str
) -> None:
    code = await _subscribe_error(http, node, "alice", channel)
    assert code in (103, 107), code  # malformed ("user#") is 107, others 103
    if channel.endswith(("#bob", "#bob,carol", "#alicex", "#alice")):
        assert code == 103


async def test_own_user_channel_is_allowed(http: aiohttp.ClientSession, node: Node) -> None:
    assert await _subscribe_error(http, node, "alice", "user#alice") is None
    assert await _subscribe_error(http, node, "alice", "dialog#bob,alice") is None


async def test_anonymous_cannot_subscribe_where_anonymous_is_not_allowed(
    http: aiohttp.ClientSession, node: Node
) -> None:
    # An empty sub is an anonymous connection; no namespace of this node allows one.
    for channel in ["news", "user#alice", "dialog#,alice"]:
        assert await _subscribe_error(http, node, "", channel) == 103, channel


async def test_namespace_needing_a_subscription_token(
    http: aiohttp.ClientSession, node: Node
) -> None:
    assert await _subscribe_error(http, node, "alice", "private:room") == 103
    assert await _subscribe_error(http, node, "alice", "$secret") == 103
    assert await _subscribe_error(http, node, "alice", "closed:room") == 103


async def test_unknown_namespace_is_102(http: aiohttp.ClientSession, node: Node) -> None:
    assert await _subscribe_error(http, node, "alice", "nowhere:room") == 102
    assert await _subscribe_error(http, node, "alice", "nowhere:user#alice") == 102


async def test_malformed_names_are_107(http: aiohttp.ClientSession, node: Node) -> None:
    # Names no namespace could hold are a bad request, as Centrifugo answers an over-long one.
    assert await _subscribe_error(http, node, "alice", "has space") == 107
    assert await _subscribe_error(http, node, "alice", "x" * 300) == 107
    assert await _subscribe_error(http, node, "alice", "nowhere:x\x00") == 107


async def test_server_side_subscription_cannot_be_left(
    http: aiohttp.ClientSession, node: Node
) -> None:
    token = sign(claims("alice", channels=["closed:alerts"]))
    client = await connected(http, node, token)
    await client.send({"id": 5, "unsubscribe": {"channel": "closed:alerts"}})
    assert await client.message(timeout=3) == {"id": 5, "unsubscribe": {}}
    await api_publish(http, node, "closed:alerts", {"still": "here"})
    pushes = await pushes_within(client, 2)
    assert [p["push"]["pub"]["data"] for p in pushes] == [{"still": "here"}]
    # Subscribing again on top of it is refused (105), not a second delivery path.
    await client.send({"id": 6, "subscribe": {"channel": "closed:alerts"}})
    assert (await client.message(timeout=3))["error"]["code"] == 105


async def test_server_side_subscription_cannot_be_widened(
    http: aiohttp.ClientSession, node: Node
) -> None:
    token = sign(claims("alice", channels=["closed:alerts"]))
    client = await connected(http, node, token)
    # Another channel of the same closed namespace: the token's grant does not spread.
    await client.send({"id": 5, "subscribe": {"channel": "closed:other"}})
    assert (await client.message(timeout=3))["error"]["code"] == 103
    # A refresh whose token names more channels renews the expiry only.
    wider = sign(claims("alice", channels=["closed:alerts", "closed:secret"]))
    await client.send({"id": 6, "refresh": {"token": wider}})
    reply = await client.message(timeout=3)
    assert "refresh" in reply, reply
    await api_publish(http, node, "closed:secret", {"leak": True})
    await api_publish(http, node, "closed:alerts", {"ok": True})
    pushes = await pushes_within(client, 2)
    assert [p["push"]["channel"] for p in pushes] == ["closed:alerts"]
    # A refresh with another user's token ends the connection rather than switch users.
    await client.send({"id": 7, "refresh": {"token": sign(claims("bob"))}})
    assert (await client.closed(timeout=3))[0] == 3500


async def test_sub_refresh_cannot_move_a_subscription(
    http: aiohttp.ClientSession, node: Node
) -> None:
    token = sign(claims("alice", channel="private:room"))
    client = await connected(http, node, sign(claims("alice")))
    await client.send({"id": 5, "subscribe": {"channel": "private:room", "token": token}})
    assert "subscribe" in await client.message(timeout=3)
    other = sign(claims("alice", channel="private:other"))
    await client.send({"id": 6, "sub_refresh": {"channel": "private:room", "token": other}})
    assert (await client.message(timeout=3))["error"]["code"] == 103
    await client.send({"id": 7, "sub_refresh": {"channel": "private:other", "token": other}})
    assert (await client.message(timeout=3))["error"]["code"] == 103  # not subscribed there
    await api_publish(http, node, "private:other", {"leak": True})
    assert await pushes_within(client, 1) == []


async def test_publications_reach_only_their_user(http: aiohttp.ClientSession, node: Node) -> None:
    alice = await connected(http, node, sign(claims("alice")), "user#alice")
    bob = await connected(http, node, sign(claims("bob")), "user#bob")
    await api_publish(http, node, "user#alice", {"for": "alice"})
    assert [p["push"]["pub"]["data"] for p in await pushes_within(alice, 1)] == [{"for": "alice"}]
    assert await pushes_within(bob, 0.3) == []
