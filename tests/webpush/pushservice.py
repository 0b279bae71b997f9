"""A push service on 127.0.0.1 for the tests (aiohttp), and a browser's side of a
subscription: its key pair and secret, made here with ``cryptography``.

The service keeps every request, answers from a per-endpoint script (``410``, ``429`` with
``Retry-After``, ``503``, …, then ``201``), and can check what a real one checks: the VAPID
token (RFC 8292: ES256 signature by the key in ``k``, ``aud`` the endpoint's origin,
``exp`` within 24 hours, ``sub``) and decrypt the body with the subscription's private key
(RFC 8291, ``http_ece``).
"""

from __future__ import annotations

import base64
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings.webpush.vapid import b64url


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """One browser profile's subscription keys (what ``pushManager.subscribe`` makes)."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    secret: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        return b64url(
            self.key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    @property
    def auth(self) -> str:
        return b64url(self.secret)

    def subscription(self, endpoint: str) -> dict[str, Any]:
        """``PushSubscription.toJSON()``."""
        return {
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }

    def decrypt(self, body: bytes) -> bytes:
        return bytes(
            http_ece.decrypt(
                body, private_key=self.key, auth_secret=self.secret, version="aes128gcm"
            )
        )


@dataclass
class Received:
    """One request the push service took."""

    at: float
    path: str
    headers: dict[str, str]
    body: bytes


class PushService:
    """The test double of FCM or autopush, on an ephemeral port of 127.0.0.1."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._scripts: dict[str, deque[tuple[int, dict[str, str]]]] = {}
        self._runner: web.AppRunner | None = None
        self.origin = ""

    def endpoint(self, name: str) -> str:
        return f"{self.origin}/push/{name}"

    def script(self, name: str, *answers: tuple[int, dict[str, str]] | int) -> None:
        """The answers to the next requests at ``name``'s endpoint (then 201)."""
        self._scripts[name] = deque(a if isinstance(a, tuple) else (a, {}) for a in answers)

    def at(self, name: str) -> list[Received]:
        return [r for r in self.received if r.path == f"/push/{name}"]

    async def _push(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.received.append(
            Received(time.monotonic(), request.path, dict(request.headers), await request.read())
        )
        script = self._scripts.get(name)
        status, headers = script.popleft() if script else (201, {})
        return web.Response(status=status, headers=headers)

    async def start(self) -> PushService:
        app = web.Application()
        app.router.add_post("/push/{name}", self._push)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


#: The VAPID subject of the tests' nodes.
SUBJECT = "mailto:ops@example.com"


def node_toml(private_key: str, *, allow_private: bool = True, web_push: str = "") -> str:
    """The configuration of a node that pushes its top-level channels (``user#alice``)
    with ``private_key``; ``allow_private`` lets it reach this push service on 127.0.0.1,
    ``web_push`` adds lines to ``[web_push]``."""
    return f"""
[channels]
web_push = true

[web_push]
vapid_private_key = "{private_key}"
vapid_subject = "{SUBJECT}"
allow_private_endpoints = {"true" if allow_private else "false"}
{web_push}
"""


def check_vapid(received: Received, origin: str, public_key: str, subject: str) -> dict[str, Any]:
    """The VAPID claims of ``received``, after every check of RFC 8292 §2-3."""
    scheme, _, params = received.headers["Authorization"].partition(" ")
    assert scheme == "vapid"
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    assert parts["k"] == public_key
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64decode(parts["k"]))
    claims: dict[str, Any] = jwt.decode(
        parts["t"],
        key,
        algorithms=["ES256"],
        audience=origin,
        options={"require": ["aud", "exp", "sub"]},
    )
    now = time.time()
    assert now < claims["exp"] <= now + 24 * 3600
    assert claims["sub"] == subject
    return claims
