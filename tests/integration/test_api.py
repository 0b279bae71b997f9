"""The server API and the operational endpoints over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import API_KEY, LiveServer, connected, open_ws, wait_until
from tidings import __version__

pytestmark = pytest.mark.integration


async def test_publish_reaches_subscribers(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("news",))
    status, body = await server.api("publish", {"channel": "news", "data": {"n": 1}})
    assert (status, body) == (200, {"result": {}})
    assert await client.frame() == [
        {"push": {"channel": "news", "pub": {"data": {"n": 1}, "offset": 1}}}
    ]


async def test_publish_accepts_the_authorization_header(server: LiveServer) -> None:
    headers = {"Authorization": f"apikey {API_KEY}"}
    async with server.http.post(
        f"{server.url}/api/publish", json={"channel": "news", "data": 1}, headers=headers
    ) as r:
        assert (r.status, await r.json()) == (200, {"result": {}})


async def test_broadcast_is_one_event_on_several_channels(server: LiveServer) -> None:
    a, _ = await connected(server, subscribe=("a",))
    b, _ = await connected(server, "bob", subscribe=("b",))
    status, body = await server.api("broadcast", {"channels": ["a", "b"], "data": [1, 2]})
    assert (status, body) == (200, {"result": {"responses": [{"result": {}}, {"result": {}}]}})
    assert await a.frame() == [{"push": {"channel": "a", "pub": {"data": [1, 2], "offset": 1}}}]
    assert await b.frame() == [{"push": {"channel": "b", "pub": {"data": [1, 2], "offset": 1}}}]


async def test_broadcast_answers_each_channel(server: LiveServer) -> None:
    a, _ = await connected(server, subscribe=("a",))
    channels = ["a", "nope:b", 1, "u#,"]
    status, body = await server.api("broadcast", {"channels": channels, "data": 7})
    assert status == 200
    responses = body["result"]["responses"]
    assert responses[0] == {"result": {}}
    assert responses[1]["error"]["code"] == 102
    assert responses[2]["error"]["code"] == 107
    assert responses[3]["error"]["code"] == 107
    assert "names no user" in responses[3]["error"]["message"]
    assert await a.frame() == [{"push": {"channel": "a", "pub": {"data": 7, "offset": 1}}}]


async def test_a_comma_in_a_channel_name_is_not_a_list(server: LiveServer) -> None:
    both, _ = await connected(server, subscribe=("a,b",))
    a, _ = await connected(server, "bob", subscribe=("a", "b"))
    await server.publish("a,b", "one channel")
    assert await both.frame() == [
        {"push": {"channel": "a,b", "pub": {"data": "one channel", "offset": 1}}}
    ]
    await a.silent()


async def test_info(server: LiveServer) -> None:
    _client, _ = await connected(server, subscribe=("a", "b"), channels=["c"])
    await server.publish("a", 1)
    for status, body in [
        await server.api("info", {}),
        await server.api("info", raw=b""),
        await _get(server, "/api/info", headers={"X-API-Key": API_KEY}),
    ]:
        assert status == 200
        (node,) = body["result"]["nodes"]
        assert node.pop("uptime") >= 0
        assert node == {
            "uid": "test-node",
            "name": "test-node",
            "version": __version__,
            "num_clients": 1,
            "num_users": 1,
            "num_subs": 3,
            "num_channels": 3,
            "epoch": server.node.log.epoch,
            "position": 1,
            "ready": True,
        }


@pytest.mark.parametrize("method", ["publish", "broadcast", "info"])
@pytest.mark.parametrize("key", [None, "", "wrong-key-0123456789", API_KEY + "x"])
async def test_wrong_or_missing_key_is_401(server: LiveServer, method: str, key: Any) -> None:
    status, body = await server.api(method, {"channel": "news", "data": 1}, key=key)
    assert (status, body) == (401, {"error": {"code": 401, "message": "missing or wrong API key"}})


async def test_wrong_key_publishes_nothing(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("news",))
    status, _ = await server.api("publish", {"channel": "news", "data": 1}, key="nope" * 5)
    assert status == 401
    await client.silent()
    assert server.node.head == 0


@pytest.mark.parametrize("method", ["publish", "broadcast", "info"])
async def test_api_disabled_without_a_key_is_403(serve: ServerFactory, method: str) -> None:
    server = await serve(api_key=None)
    status, body = await server.api(method, {"channel": "news", "data": 1})
    assert status == 403
    assert body["error"]["code"] == 403
    assert "api.key" in body["error"]["message"]


@pytest.mark.parametrize(
    ("method", "raw", "message"),
    [
        ("publish", b"{not json", "body is not JSON"),
        ("publish", b"[1, 2]", "body must be a JSON object"),
        ("publish", b'{"channel": "\\ud800", "data": 1}', "body is not JSON"),
        ("publish", b'{"channel": "a\xffb", "data": 1}', "body is not JSON"),
        ("batch", b'"x"', "body must be a JSON object"),
    ],
)
async def test_bodies_that_are_not_json_objects_are_400(
    server: LiveServer, method: str, raw: bytes, message: str
) -> None:
    status, body = await server.api(method, raw=raw)
    assert status == 400
    assert body["error"]["code"] == 400
    assert message in body["error"]["message"]


@pytest.mark.parametrize(
    ("method", "raw", "code", "message"),
    [
        ("publish", b"", 107, "field 'channel' is required"),
        ("publish", b'{"data": 1}', 107, "field 'channel' is required"),
        ("publish", b'{"channel": "", "data": 1}', 107, "field 'channel' is required"),
        ("publish", b'{"channel": 5, "data": 1}', 107, "field 'channel' must be a string"),
        ("publish", b'{"channel": "news"}', 107, "field 'data' is required"),
        ("publish", b'{"channel": "nope:x", "data": 1}', 102, "unknown namespace"),
        ("publish", b'{"channel": "has space", "data": 1}', 107, "invalid channel: channel name"),
        (
            "publish",
            b'{"channel": "a\\u0000b", "data": 1}',
            107,
            "invalid channel: channel name holds a control character (U+0000 at index 1)",
        ),
        (
            "publish",
            b'{"channel": "%s", "data": 1}' % (b"x" * 256),
            107,
            "invalid channel: channel name is 256 bytes long, over the limit of 255",
        ),
        ("publish", b'{"channel": "a", "b64data": "%%%"}', 107, "base64 of a JSON value"),
        ("publish", b'{"channel": "a", "data": 1, "tags": {"k": "v"}}', 108, "'tags'"),
        ("publish", b'{"channel": "a", "data": 1, "skip_history": true}', 108, "skip_history"),
        ("broadcast", b'{"channels": [], "data": 1}', 107, "field 'channels' must be a non-empty"),
        ("broadcast", b'{"channels": "news", "data": 1}', 107, "field 'channels' must be"),
        ("broadcast", b'{"channels": ["a"]}', 107, "field 'data' is required"),
        ("history", b'{"channel": "a", "limit": "x"}', 107, "limit must be"),
        ("history_remove", b"{}", 107, "field 'channel' is required"),
        ("subscribe", b'{"channel": "a"}', 107, "field 'user' is required"),
        ("disconnect", b'{"user": "u", "disconnect": {"code": 1}}', 107, "disconnect.code"),
        ("disconnect", b'{"user": "u", "disconnect": {"reason": "{}"}}', 107, "plain text"),
        ("refresh", b'{"user": "u", "expire_at": -1}', 107, "expire_at"),
        ("presence", b'{"channel": "a"}', 108, "presence is off in this namespace"),
        ("presence_stats", b'{"channel": "a"}', 108, "presence is off in this namespace"),
        ("presence", b'{"channel": "nowhere:a"}', 102, "unknown namespace"),
        ("presence_stats", b"{}", 107, "field 'channel' is required"),
    ],
)
async def test_bad_requests_answer_the_documented_error(
    server: LiveServer, method: str, raw: bytes, code: int, message: str
) -> None:
    client, _ = await connected(server, subscribe=("a", "news"))
    status, body = await server.api(method, raw=raw)
    assert status == 200
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert message in body["error"]["message"]
    await client.silent(0.05)
    assert server.node.head == 0  # nothing half-published


async def test_an_unknown_method_is_404(server: LiveServer) -> None:
    status, body = await server.api("teleport", {})
    assert status == 404 and "teleport" in body["error"]["message"]


async def test_data_over_the_message_limit_is_106(serve: ServerFactory) -> None:
    server = await serve({"amqp.max_message_bytes": 1024})
    status, body = await server.api("publish", {"channel": "news", "data": "x" * 2000})
    assert status == 200
    assert body["error"]["code"] == 106
    assert "over the 1024 limit" in body["error"]["message"]


async def test_body_over_the_api_limit_is_413(server: LiveServer) -> None:
    status, body = await server.api("publish", raw=b'"' + b"x" * (1 << 20) + b'"')
    assert (status, body["error"]["code"]) == (413, 413)


async def test_healthz_and_readyz(server: LiveServer) -> None:
    assert await _get(server, "/healthz") == (200, {"status": "ok"})
    assert await _get(server, "/readyz") == (200, {"status": "ready"})


async def test_readyz_is_503_while_draining(server: LiveServer) -> None:
    client, _ = await connected(server)
    server.node.drain()
    assert await client.close_code() == 3001
    assert await _get(server, "/readyz") == (503, {"status": "not ready"})
    assert await _get(server, "/healthz") == (200, {"status": "ok"})
    async with server.http.get(f"{server.url}/connection/websocket") as r:
        assert (r.status, await r.json()) == (503, {"error": "server is shutting down"})
    metrics = await server.metrics()
    assert metrics["tidings_ready", ()] == 0
    assert metrics["tidings_connections_refused_total", (("reason", "draining"),)] == 1


async def test_metrics_count_connections_events_pushes_and_disconnects(
    server: LiveServer,
) -> None:
    metrics = await server.metrics()
    assert metrics["tidings_ready", ()] == 1
    assert metrics["tidings_events_in_total", ()] == 0
    alice, _ = await connected(server, subscribe=("news", "sport"))
    bob, _ = await connected(server, "bob", subscribe=("news",))
    await server.publish("news", 1)
    await server.publish("sport", 2)
    await server.publish("nobody", 3)
    assert len(await alice.frame()) == len(await alice.frame()) == len(await bob.frame()) == 1

    # A protocol violation (3501), a bad token (3500).
    bad = await open_ws(server)
    await bad.ws.send_str('{"id":1,"subscribe":{"channel":"x"}}')
    assert await bad.close_code() == 3501
    forged = await open_ws(server)
    await forged.send({"id": 1, "connect": {"token": "a.b.c"}})
    assert await forged.close_code() == 3500
    await wait_until(lambda: len(server.node.live) == 2, what="refused clients to go")

    metrics = await server.metrics()
    assert metrics["tidings_connections", (("transport", "websocket"),)] == 2
    assert metrics["tidings_subscriptions", ()] == 3
    assert metrics["tidings_events_in_total", ()] == 3
    assert metrics["tidings_publications_total", ()] == 3
    assert metrics["tidings_pushes_total", ()] == 3
    assert metrics["tidings_log_position", ()] == 3
    assert metrics["tidings_disconnects_total", (("code", "3501"),)] == 1
    assert metrics["tidings_disconnects_total", (("code", "3500"),)] == 1
    assert metrics["tidings_api_requests_total", (("method", "publish"), ("status", "200"))] == 3

    await alice.ws.close()
    await wait_until(lambda: len(server.node.live) == 1, what="alice to go")
    metrics = await server.metrics()
    assert metrics["tidings_connections", (("transport", "websocket"),)] == 1
    assert metrics["tidings_subscriptions", ()] == 1
    # A client that leaves by itself is not a server disconnect.
    assert sum(v for (name, _), v in metrics.items() if name == "tidings_disconnects_total") == 2


async def test_subscriptions_gauge_follows_unsubscribe(server: LiveServer) -> None:
    client, _ = await connected(server, subscribe=("a", "b"))
    assert (await server.metrics())["tidings_subscriptions", ()] == 2
    await client.send({"id": 9, "unsubscribe": {"channel": "a"}})
    assert await client.message() == {"id": 9, "unsubscribe": {}}
    assert server.node.hub.subscriptions == 1
    assert (await server.metrics())["tidings_subscriptions", ()] == 1


async def test_metrics_count_recoveries(server: LiveServer) -> None:
    epoch = server.node.log.epoch
    client, _ = await connected(server)
    await client.send(
        {"id": 2, "subscribe": {"channel": "a", "recover": True, "offset": 0, "epoch": epoch}},
        {"id": 3, "subscribe": {"channel": "b", "recover": True, "offset": 0, "epoch": "old"}},
    )
    await client.frame()
    metrics = await server.metrics()
    assert metrics["tidings_recoveries_total", (("outcome", "recovered"),)] == 1
    assert metrics["tidings_recoveries_total", (("outcome", "failed"),)] == 1


async def test_metrics_count_command_errors_by_code(server: LiveServer) -> None:
    """``tidings_command_errors`` is declared "by code"; every error reply must count."""
    client, _ = await connected(server)
    await client.send(
        {"id": 2, "subscribe": {"channel": "nope:x"}},
        {"id": 3, "subscribe": {"channel": "$private"}},
        {"id": 4, "presence": {"channel": "a"}},  # presence is off at the top level
    )
    assert [r["error"]["code"] for r in await client.frame()] == [102, 103, 108]
    metrics = await server.metrics()
    errors = {
        dict(labels)["code"]: value
        for (name, labels), value in metrics.items()
        if name == "tidings_command_errors_total"
    }
    assert errors == {"102": 1, "103": 1, "108": 1}


async def _get(
    server: LiveServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with server.http.get(f"{server.url}{path}", headers=headers) as r:
        return r.status, await r.json()
