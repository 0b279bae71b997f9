"""The push-only WebSocket: connect request as the first message or in ``cf_connect``."""

from __future__ import annotations

from urllib.parse import quote

import orjson
import pytest

from tests.integration.live import LiveServer, WsClient, open_ws, token
from tidings import __version__

pytestmark = pytest.mark.integration

PATH = "/connection/uni_websocket"


def _position(server: LiveServer, offset: int = 0) -> dict[str, object]:
    return {
        "recoverable": True,
        "positioned": True,
        "epoch": server.node.log.epoch,
        "offset": offset,
    }


async def _connect_result(client: WsClient) -> dict[str, object]:
    message = await client.message()
    assert set(message) == {"connect"}, message
    result: dict[str, object] = message["connect"]
    assert isinstance(result.pop("client"), str)
    return result


async def test_connect_request_as_the_first_message(server: LiveServer) -> None:
    client = await open_ws(server, PATH)
    await client.ws.send_str(orjson.dumps({"token": token(channels=["news"], ttl=0)}).decode())
    assert await _connect_result(client) == {
        "version": __version__,
        "ping": 25,  # no "pong": nothing is expected back on a push-only transport
        "subs": {"news": _position(server)},
    }
    await server.publish("news", {"n": 1})
    assert await client.message() == {"channel": "news", "pub": {"data": {"n": 1}, "offset": 1}}
    # Whatever the client sends afterwards is ignored, commands included.
    await client.send({"id": 2, "subscribe": {"channel": "sport"}})
    await client.ws.send_str("not even json")
    await server.publish("sport", 1)
    await server.publish("news", 2)
    assert await client.message() == {"channel": "news", "pub": {"data": 2, "offset": 3}}


async def test_connect_request_in_cf_connect(server: LiveServer) -> None:
    request = orjson.dumps({"token": token(channels=["news", "sport"], ttl=0)}).decode()
    client = await open_ws(server, f"{PATH}?cf_connect={quote(request)}")
    result = await _connect_result(client)
    assert result["subs"] == {"news": _position(server), "sport": _position(server)}
    status, _ = await server.api("broadcast", {"channels": ["news", "sport"], "data": "x"})
    assert status == 200
    # Two pushes for one client in one batch share a frame, newline-joined.
    assert await client.frame() == [
        {"channel": "news", "pub": {"data": "x", "offset": 1}},
        {"channel": "sport", "pub": {"data": "x", "offset": 1}},
    ]


async def test_recovery_through_cf_connect(server: LiveServer) -> None:
    for n in range(1, 5):
        await server.publish("news", n)
    epoch = server.node.log.epoch
    request = {
        "token": token(channels=["news"]),
        "subs": {"news": {"recover": True, "offset": 2, "epoch": epoch}},
    }
    client = await open_ws(server, f"{PATH}?cf_connect={quote(orjson.dumps(request).decode())}")
    result = await _connect_result(client)
    assert result["subs"] == {
        "news": {
            **_position(server, 4),
            "was_recovering": True,
            "recovered": True,
            "publications": [{"data": 3, "offset": 3}, {"data": 4, "offset": 4}],
        }
    }
    await server.publish("news", 5)
    assert await client.message() == {"channel": "news", "pub": {"data": 5, "offset": 5}}


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ("not json", 3501),
        ("[1]", 3501),
        ('{"token": 5}', 3501),
        ('{"token": "forged.token.here"}', 3500),
        ("{}", 3500),  # no token and no anonymous access
        # Expired: final too, a push-only client has no way to get a new token by itself.
        ('{"token": "' + token(ttl=-5) + '"}', 3500),
    ],
)
async def test_refused_connect_requests(server: LiveServer, first: str, code: int) -> None:
    client = await open_ws(server, PATH)
    await client.ws.send_str(first)
    assert await client.close_code() == code


async def test_bad_cf_connect_is_refused(server: LiveServer) -> None:
    client = await open_ws(server, f"{PATH}?cf_connect=%7Bnope")
    assert await client.close_code() == 3501
