"""Web Push from a live node: a page registers its subscription (the SDK's ``rpc``, or the
HTTP endpoints), a publication to a user with no live connection reaches the push service
on 127.0.0.1 of ``tests/webpush/pushservice.py``, which decrypts it with the
subscription's private key (``http_ece``) and checks the VAPID JWT and the headers.

The node runs with ``web_push.allow_private_endpoints`` (the push service is on
loopback over plain http); one without it shows such subscriptions refused.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

pytest.importorskip("centrifuge", reason="needs centrifuge-python: run `make deps`")

from centrifuge import Client, ReplyError

from tests.integration.conftest import Connect, ServerFactory
from tests.integration.live import LiveServer, make_settings, token, wait_until
from tests.webpush.pushservice import (
    SUBJECT,
    Browser,
    PushService,
    Received,
    check_vapid,
    node_toml,
)
from tidings.log.memory import MemoryLedger, MemoryLog
from tidings.node import Node
from tidings.webpush.subscription import KIND, encode_entry, entry_key, parse_subscription
from tidings.webpush.vapid import generate_key

pytestmark = pytest.mark.integration

PRIVATE, PUBLIC = generate_key()


def toml(*, private: bool = True, extra: str = "") -> str:
    web_push = f'retry_backoff = "50ms"\nttl = "10m"\nurgency = "high"\n{extra}'
    quiet = '\n[[namespaces]]\nname = "quiet"  # no web_push\n'
    return node_toml(PRIVATE, allow_private=private, web_push=web_push) + quiet


@pytest.fixture
async def push() -> AsyncIterator[PushService]:
    service = await PushService().start()
    yield service
    await service.stop()


@pytest.fixture
async def server(serve: ServerFactory) -> LiveServer:
    return await serve(toml=toml())


async def register(
    server: LiveServer, sdk: Connect, push: PushService, user: str, name: str
) -> Browser:
    """``user``'s browser registers an endpoint of the push service over the SDK's rpc,
    then closes its tab (the user is offline)."""
    browser = Browser()
    client = await sdk(server, user)
    reply = await client.rpc("tidings.push.subscribe", browser.subscription(push.endpoint(name)))
    assert reply.data == {}
    await client.disconnect()
    await wait_until(lambda: not server.node.user_online(user), what=f"{user} offline")
    return browser


def count(server: LiveServer, result: str) -> float:
    value: float = server.node.metrics.web_push.labels(result)._value.get()
    return value


async def received(push: PushService, name: str, n: int = 1) -> list[Received]:
    await wait_until(lambda: len(push.at(name)) >= n, what=f"{n} push request(s) at {name}")
    return push.at(name)


async def test_an_offline_user_gets_the_publication_encrypted_with_vapid(
    server: LiveServer, sdk: Connect, push: PushService
) -> None:
    client = await sdk(server, "carol")
    assert (await client.rpc("tidings.push.key", None)).data == {"key": PUBLIC}
    browser = await register(server, sdk, push, "alice", "a")
    assert server.node.ledger.count(KIND) == 1

    sent_at = time.time()
    await server.publish("user#alice", {"kind": "invoice.paid", "invoice": 7})
    (request,) = await received(push, "a")
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert request.headers["Urgency"] == "high"
    assert 595 <= int(request.headers["TTL"]) <= 600
    assert request.headers["Authorization"].startswith("vapid t=")
    assert f"k={PUBLIC}" in request.headers["Authorization"]
    claims = check_vapid(request, push.origin, PUBLIC, SUBJECT)
    assert claims["aud"] == push.origin  # the endpoint's origin
    assert sent_at + 3600 < claims["exp"] <= time.time() + 24 * 3600
    message = orjson.loads(browser.decrypt(request.body))
    assert message["channel"] == "user#alice"
    assert message["data"] == {"kind": "invoice.paid", "invoice": 7}
    assert message["offset"] == server.node.head
    await wait_until(lambda: count(server, "sent") == 1, what="counted sent")


async def test_a_user_with_a_live_connection_is_not_pushed(
    server: LiveServer, sdk: Connect, push: PushService
) -> None:
    browser = Browser()
    alice = await sdk(server, "alice")
    await alice.rpc("tidings.push.subscribe", browser.subscription(push.endpoint("alice")))
    await register(server, sdk, push, "bob", "bob")
    assert server.node.user_online("alice")

    await server.publish("user#alice", {"n": 1})
    await server.publish("user#bob", {"n": 2})
    await received(push, "bob")  # published after alice's: hers would have come first
    assert push.at("alice") == []
    # A channel of a namespace without web_push pushes no one.
    await server.publish("quiet:news#bob", {"n": 3})
    await server.publish("user#bob", {"n": 4})
    await received(push, "bob", 2)
    assert len(push.at("bob")) == 2


async def test_a_channel_naming_several_users_pushes_each_offline_one(
    server: LiveServer, sdk: Connect, push: PushService
) -> None:
    alice = await register(server, sdk, push, "alice", "alice")
    bob = await register(server, sdk, push, "bob", "bob")
    await server.publish("deal#alice,bob", {"n": 1})
    (to_alice,) = await received(push, "alice")
    (to_bob,) = await received(push, "bob")
    assert orjson.loads(alice.decrypt(to_alice.body))["channel"] == "deal#alice,bob"
    assert orjson.loads(bob.decrypt(to_bob.body))["data"] == {"n": 1}


async def test_410_drops_the_subscription_from_the_ledger(
    server: LiveServer, sdk: Connect, push: PushService
) -> None:
    await register(server, sdk, push, "alice", "a")
    push.script("a", 410)
    await server.publish("user#alice", {"n": 1})
    await received(push, "a")
    await wait_until(lambda: server.node.ledger.count(KIND) == 0, what="the subscription dropped")
    assert count(server, "gone") == 1
    await server.publish("user#alice", {"n": 2})
    await register(server, sdk, push, "bob", "b")
    await server.publish("user#bob", {"n": 3})
    await received(push, "b")
    assert len(push.at("a")) == 1  # nothing more to the dropped one


async def test_429_is_retried_after_retry_after(
    server: LiveServer, sdk: Connect, push: PushService
) -> None:
    browser = await register(server, sdk, push, "alice", "a")
    push.script("a", (429, {"Retry-After": "1"}))
    await server.publish("user#alice", {"n": 1})
    first, second = await received(push, "a", 2)
    assert second.at - first.at >= 0.95
    assert first.body != second.body  # encrypted again, with a new salt and key
    assert orjson.loads(browser.decrypt(second.body))["data"] == {"n": 1}
    assert 0 < int(second.headers["TTL"]) < int(first.headers["TTL"]) + 1
    await wait_until(lambda: count(server, "sent") == 1, what="counted sent")
    assert count(server, "retried") == 1


async def test_5xx_is_retried_with_backoff(
    server: LiveServer, sdk: Connect, push: PushService
) -> None:
    await register(server, sdk, push, "alice", "a")
    push.script("a", 503, 500)
    await server.publish("user#alice", {"n": 1})
    first, second, third = await received(push, "a", 3)
    # retry_backoff 50 ms, doubled: 50 then 100 ms.
    assert second.at - first.at >= 0.045
    assert third.at - second.at >= 0.095
    await wait_until(lambda: count(server, "sent") == 1, what="counted sent")
    assert count(server, "retried") == 2
    assert server.node.ledger.count(KIND) == 1  # kept


async def test_unsubscribe_over_rpc(server: LiveServer, sdk: Connect, push: PushService) -> None:
    client = await sdk(server, "alice")
    browser = Browser()
    endpoint = push.endpoint("a")
    await client.rpc("tidings.push.subscribe", browser.subscription(endpoint))
    reply = await client.rpc("tidings.push.unsubscribe", {"endpoint": endpoint})
    assert reply.data == {"removed": True}
    reply = await client.rpc("tidings.push.unsubscribe", {"endpoint": endpoint})
    assert reply.data == {"removed": False}
    assert server.node.ledger.count(KIND) == 0


async def rpc_error(client: Client, method: str, data: Any) -> tuple[int, str]:
    with pytest.raises(ReplyError) as caught:
        await client.rpc(method, data)
    return caught.value.code, caught.value.message


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("http://push.example.com/x", "endpoint must be an https:// URL"),
        ("https://127.0.0.1/x", "endpoint's host is not a public address"),
        ("https://10.1.2.3/x", "endpoint's host is not a public address"),
        ("https://[::1]/x", "endpoint's host is not a public address"),
        ("https://169.254.169.254/latest", "endpoint's host is not a public address"),
        ("https://localhost/x", "the endpoint's host 'localhost' is not a public address"),
    ],
    ids=["http", "loopback", "private", "ipv6-loopback", "metadata", "name-of-loopback"],
)
async def test_subscriptions_into_private_networks_are_refused(
    serve: ServerFactory, sdk: Connect, endpoint: str, why: str
) -> None:
    server = await serve(toml=toml(private=False))
    client = await sdk(server)
    code, message = await rpc_error(
        client, "tidings.push.subscribe", Browser().subscription(endpoint)
    )
    assert (code, message) == (107, why)
    assert server.node.ledger.count(KIND) == 0


async def test_bad_subscriptions_and_limits_answer_their_codes(
    serve: ServerFactory, sdk: Connect, push: PushService
) -> None:
    server = await serve(toml=toml(extra="max_subscriptions_per_user = 1"))
    client = await sdk(server)
    assert await rpc_error(client, "tidings.push.subscribe", {"endpoint": push.endpoint("a")}) == (
        107,
        "keys must be an object {p256dh, auth}",
    )
    assert (await rpc_error(client, "tidings.push.subscribe", None))[0] == 107
    assert (await rpc_error(client, "tidings.push.nothing", {}))[0] == 104
    await client.rpc("tidings.push.subscribe", Browser().subscription(push.endpoint("a")))
    code, message = await rpc_error(
        client, "tidings.push.subscribe", Browser().subscription(push.endpoint("b"))
    )
    assert (code, message) == (106, "a user may register at most 1 push subscriptions")
    # The same endpoint again renews its keys.
    await client.rpc("tidings.push.subscribe", Browser().subscription(push.endpoint("a")))
    assert server.node.ledger.count(KIND) == 1


async def test_without_web_push_the_methods_are_not_available(
    serve: ServerFactory, sdk: Connect, http: aiohttp.ClientSession
) -> None:
    server = await serve()
    client = await sdk(server)
    assert (await rpc_error(client, "tidings.push.key", None))[0] == 108
    async with http.get(f"{server.url}/push/key") as r:
        assert r.status == 404
        assert (await r.json())["code"] == 108


# ---------------------------------------------------------------------- over HTTP
def bearer(user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}", "Content-Type": "application/json"}


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.post(url, data=orjson.dumps(body), headers=headers) as r:
        assert r.content_type == "application/json"
        return r.status, await r.json()


async def test_http_endpoints_register_and_forget(
    server: LiveServer, http: aiohttp.ClientSession, push: PushService
) -> None:
    async with http.get(f"{server.url}/push/key") as r:
        assert (r.status, await r.json()) == (200, {"result": {"key": PUBLIC}})
    browser = Browser()
    subscribe, unsubscribe = f"{server.url}/push/subscribe", f"{server.url}/push/unsubscribe"
    subscription = browser.subscription(push.endpoint("a"))
    assert await post(http, subscribe, subscription, bearer()) == (200, {"result": {}})
    await server.publish("user#alice", {"n": 1})
    (request,) = await received(push, "a")
    assert orjson.loads(browser.decrypt(request.body))["data"] == {"n": 1}

    body = {"endpoint": push.endpoint("a")}
    assert await post(http, unsubscribe, body, bearer()) == (200, {"result": {"removed": True}})
    assert server.node.ledger.count(KIND) == 0


async def test_http_endpoints_refuse_what_they_must(
    serve: ServerFactory, http: aiohttp.ClientSession, push: PushService
) -> None:
    server = await serve(toml=toml(private=False))
    url = f"{server.url}/push/subscribe"
    good = Browser().subscription(push.endpoint("a"))
    status, body = await post(http, url, good, {"Content-Type": "application/json"})
    assert (status, body["code"]) == (401, 101)
    bad_token = {**bearer(), "Authorization": "Bearer not-a-token"}
    assert (await post(http, url, good, bad_token))[0] == 401
    cross_site = {**bearer(), "Origin": "https://evil.example"}
    assert (await post(http, url, good, cross_site))[0] == 403
    as_form = {**bearer(), "Content-Type": "application/x-www-form-urlencoded"}
    assert (await post(http, url, good, as_form))[0] == 415
    huge = {**good, "padding": "x" * 10_000}
    assert (await post(http, url, huge, bearer()))[0] == 413
    # plain http to 127.0.0.1: refused on a node without allow_private_endpoints.
    status, body = await post(http, url, good, bearer())
    assert (status, body) == (400, {"error": "endpoint must be an https:// URL", "code": 107})
    assert server.node.ledger.count(KIND) == 0


async def test_records_read_while_warming_up_are_not_pushed(push: PushService) -> None:
    settings = make_settings(
        {
            "channels.web_push": True,
            "web_push.vapid_private_key": PRIVATE,
            "web_push.vapid_subject": SUBJECT,
            "web_push.allow_private_endpoints": True,
        }
    )
    browser = Browser()
    sub = parse_subscription(browser.subscription(push.endpoint("a")), allow_private=True)
    ledger = MemoryLedger()  # as a restarted node finds it: the subscription is there
    ledger.apply(KIND, entry_key("alice", sub.endpoint), encode_entry("alice", sub))
    log = MemoryLog()
    headers = {"x-tidings-channel": "user#alice"}
    await log.append("app", b'{"n":"old"}', headers)  # in the warm-up window
    node = Node(settings, log, ledger=ledger)
    await node.start()
    try:
        assert node.head == 1  # the old record was routed, into history
        await log.append("app", b'{"n":"new"}', headers)
        (request,) = await received(push, "a")
        assert orjson.loads(browser.decrypt(request.body))["data"] == {"n": "new"}
    finally:
        await node.stop()
