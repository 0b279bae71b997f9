"""Helpers of the security suite: tokens forged every way an attacker would, a WebSocket
client over aiohttp, and the check that a node's log holds no token."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import jwt
import orjson

from tests.integration.live import WsClient
from tests.system.harness import API_KEY, SECRET, TIME_SCALE, Node

AUDIENCE = "tidings-tests"
ISSUER = "https://auth.example.test"

#: Namespaces of the security nodes: one needing subscription tokens, one closed to
#: client subscriptions; anything else (``nowhere:x``) is an unknown namespace.
CONFIG = """
[[namespaces]]
name = "private"
require_subscription_token = true

[[namespaces]]
name = "closed"
allow_subscribe = false
"""
DEBUG = {"TIDINGS_SERVER_LOG_LEVEL": "debug"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(user: str | None = "alice", ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    """Connection (or, with ``channel=``, subscription) claims valid for ``ttl`` seconds."""
    now = int(time.time())
    out: dict[str, Any] = {"iat": now, "exp": now + ttl}
    if user is not None:
        out["sub"] = user
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def sign(payload: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    """A JWT signed with ``key``."""
    return jwt.encode(payload, key, algorithm=alg)


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` JWT (empty signature)."""
    header = b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
    return f"{header}.{b64(orjson.dumps(payload))}."


def hmac_with(key_text: str, payload: dict[str, Any]) -> str:
    """HS256 over ``key_text`` done by hand: PyJWT refuses to use a PEM text as an HMAC
    secret, an attacker does not."""
    import hashlib
    import hmac

    header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    body = b64(orjson.dumps(payload))
    mac = hmac.new(key_text.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(mac)}"


def assert_not_logged(node: Node, *tokens: str) -> None:
    """Neither a token nor its payload or signature part is in the node's log."""
    time.sleep(0.1 * TIME_SCALE)  # stderr is line-buffered; let the last lines land
    text = node.log_text()
    for token in tokens:
        assert token not in text, "token logged"
        for part in token.split(".")[1:]:
            if len(part) >= 16:
                assert part not in text, f"part of a token logged: {part[:12]}…"


async def open_ws(
    http: aiohttp.ClientSession, node: Node, path: str = "/connection/websocket", **kwargs: Any
) -> WsClient:
    """A WebSocket to ``node`` (closed with ``http``)."""
    ws = await http.ws_connect(f"ws://127.0.0.1:{node.port}{path}", **kwargs)
    return WsClient(ws)


async def connect_reply(http: aiohttp.ClientSession, node: Node, token: str) -> WsClient:
    """A client that sent connect with ``token``."""
    client = await open_ws(http, node)
    await client.send({"id": 1, "connect": {"token": token}})
    return client


async def refused_with(
    http: aiohttp.ClientSession, node: Node, token: str
) -> tuple[int | None, str]:
    """Connects with ``token``; returns the close code and reason the server answered."""
    client = await connect_reply(http, node, token)
    return await client.closed(timeout=3)


async def connected(
    http: aiohttp.ClientSession, node: Node, token: str, *subscribe: str
) -> WsClient:
    """A connected client (and its successful subscriptions)."""
    client = await open_ws(http, node)
    commands: list[Any] = [{"id": 1, "connect": {"token": token}}]
    commands += [{"id": 2 + i, "subscribe": {"channel": c}} for i, c in enumerate(subscribe)]
    await client.send(*commands)
    replies: list[Any] = []
    while len(replies) < len(commands):
        replies += [r for r in await client.frame(timeout=3) if "id" in r]
    for reply in replies:
        assert "error" not in reply, reply
    return client


async def api_publish(http: aiohttp.ClientSession, node: Node, channel: str, data: Any) -> None:
    async with http.post(
        f"{node.url}/api/publish",
        json={"channel": channel, "data": data},
        headers={"X-API-Key": API_KEY},
    ) as r:
        assert r.status == 200, await r.text()


async def pushes_within(client: WsClient, seconds: float = 0.5) -> list[Any]:
    """Every push that arrives within ``seconds``."""
    out: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds * TIME_SCALE
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await client.ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        out += [m for m in (orjson.loads(x) for x in msg.data.split("\n")) if "push" in m]
    return out
