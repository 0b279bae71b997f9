"""The server API: only the key opens it, and no client endpoint leads into it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.security.wire import (
    api_publish,
    assert_not_logged,
    claims,
    connected,
    open_ws,
    pushes_within,
    refused_with,
    sign,
)
from tests.system.harness import API_KEY, Node, start_node

pytestmark = pytest.mark.integration

BODY = {"channel": "news", "data": {"injected": True}}


@pytest.mark.parametrize("method", ["publish", "broadcast", "info"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": "wrong-key-0123456789"},
        {"X-API-Key": API_KEY[:-1]},
        {"X-API-Key": API_KEY + "x"},
        {"X-API-Key": API_KEY.upper()},
        {"Authorization": "apikey wrong-key-0123456789"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": "apikey"},
    ],
    ids=[
        "none",
        "empty",
        "wrong",
        "prefix",
        "longer",
        "case",
        "auth-wrong",
        "auth-scheme",
        "auth-empty",
    ],
)
async def test_no_key_or_a_wrong_key_is_401(
    http: aiohttp.ClientSession, node: Node, method: str, headers: dict[str, str]
) -> None:
    body = BODY if method != "broadcast" else {"channels": ["news"], "data": 1}
    async with http.post(f"{node.url}/api/{method}", json=body, headers=headers) as r:
        assert r.status == 401
        reply = await r.json()
        assert reply["error"]["code"] == 401
        assert API_KEY not in await r.text()


async def test_rejected_keys_publish_nothing_and_are_not_logged(
    http: aiohttp.ClientSession, node: Node
) -> None:
    listener = await connected(http, node, sign(claims("listener")), "news")
    guess = "guessed-key-abcdef0123456789"
    async with http.post(f"{node.url}/api/publish", json=BODY, headers={"X-API-Key": guess}) as r:
        assert r.status == 401
    assert await pushes_within(listener, 0.5) == []
    text = node.log_text()
    assert guess not in text and API_KEY not in text


@pytest.fixture(scope="module")
def keyless_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = start_node(Path(tmp_path_factory.mktemp("keyless")), api_key=None)
    yield n
    n.stop()


async def test_api_is_disabled_without_a_key(
    http: aiohttp.ClientSession, keyless_node: Node
) -> None:
    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "None"}, {"X-API-Key": "null"}):
        async with http.post(f"{keyless_node.url}/api/publish", json=BODY, headers=headers) as r:
            assert r.status == 403


async def test_api_shaped_messages_over_the_websocket_do_nothing(
    http: aiohttp.ClientSession, node: Node
) -> None:
    listener = await connected(http, node, sign(claims("listener")), "news")
    # Before connect: anything but connect ends the connection (3501).
    early = await open_ws(http, node)
    await early.ws.send_str(orjson.dumps({"method": "publish", "params": BODY}).decode())
    assert (await early.closed(timeout=3))[0] == 3501
    # After connect: the server API's shapes, with the key, are not commands.
    client = await connected(http, node, sign(claims("mallory")))
    for shape in [
        {"method": "publish", "params": BODY, "api_key": API_KEY},
        {"id": 7, "method": "publish", "params": BODY},
        BODY | {"api_key": API_KEY},
        {"id": 8, "broadcast": {"channels": ["news"], "data": {"injected": True}}},
    ]:
        await client.ws.send_str(orjson.dumps(shape).decode())
    # The protocol's own publish command is refused where the namespace does not allow it.
    await client.send({"id": 9, "publish": {"channel": "news", "data": {"injected": True}}})
    replies = []
    while not any(r.get("id") == 9 for r in replies):
        replies += await client.frame(timeout=3)
    assert {"id": 9, "error": {"code": 103, "message": "permission denied"}} in replies
    assert await pushes_within(listener, 1) == []
    # The connection is still fine afterwards: nothing above was taken as an API call.
    await api_publish(http, node, "news", {"real": True})
    assert [p["push"]["pub"]["data"] for p in await pushes_within(listener, 1)] == [{"real": True}]


async def test_the_api_key_is_not_a_token(http: aiohttp.ClientSession, node: Node) -> None:
    code, _ = await refused_with(http, node, API_KEY)
    assert code == 3500
    async with http.get(f"{node.url}/events", headers={"X-API-Key": API_KEY}) as r:
        assert r.status == 401
    async with http.get(f"{node.url}/events", params={"token": API_KEY}) as r:
        assert r.status == 401
    assert_not_logged(node, API_KEY)
    assert API_KEY not in node.log_text()


async def test_api_bodies_on_client_endpoints_publish_nothing(
    http: aiohttp.ClientSession, node: Node
) -> None:
    listener = await connected(http, node, sign(claims("listener")), "news")
    key = {"X-API-Key": API_KEY}
    async with http.post(f"{node.url}/connection/uni_sse", json=BODY, headers=key) as r:
        assert r.status in (400, 401), r.status
    async with http.post(f"{node.url}/connection/websocket", json=BODY, headers=key) as r:
        assert r.status == 405
    async with http.post(f"{node.url}/events", json=BODY, headers=key) as r:
        assert r.status == 405
    async with http.get(f"{node.url}/api/publish", headers=key) as r:
        assert r.status == 405
    assert await pushes_within(listener, 0.5) == []
