"""The demo page: the original story, invoicing events as toasts in each user's browser.

In demo mode (``tidings serve --demo``) ``/`` serves a static page (no build step, nothing
from the network) and two helpers that only a demo may offer:

- ``GET /demo/token?user=alice`` mints a short-lived connection token for ``alice`` whose
  server-side channels are ``user#alice`` and ``demo:online``; the page opens
  ``/events?token=...`` with it.
- ``GET /demo/presence`` answers who is subscribed to ``demo:online`` anywhere in the
  cluster, the page's "online now" list, which the channel's ``join``/``leave`` pushes
  then keep current.
- ``POST /demo/publish`` ``{"user": "bob", "kind": "invoice.paid", "invoice": 12,
  "amount": "120.00"}`` publishes a sample event to ``user#bob`` through the node, the
  path every event takes (into RabbitMQ when it is configured).

The page also offers Web Push ("Notify me when the tab is closed"): it registers the
service worker ``/sw.js``, subscribes with the key of ``GET /push/key`` and registers the
subscription with ``POST /push/subscribe`` (``transport/webpush.py``), which needs
``[web_push]`` and ``web_push = true`` on the top-level ``[channels]``.

In demo mode the namespace ``demo`` has presence and forced join/leave (see
:func:`demo_settings`), because ``/events`` is a push-only stream that cannot ask for them.
Outside demo mode no helper exists and ``/`` answers a short JSON pointer to the
endpoints and the docs.
"""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
from aiohttp import hdrs, web

from tidings import __version__
from tidings.appkeys import NODE
from tidings.auth import mint_token
from tidings.config import NamespaceSettings, Settings
from tidings.node import Node, PublishError
from tidings.transport.origin import origin_allowed

__all__ = [
    "DEMO_NAMESPACE",
    "DEMO_TOKEN_TTL",
    "KINDS",
    "ONLINE_CHANNEL",
    "add_demo_routes",
    "demo_settings",
]

#: Seconds a demo token lives; the page fetches a new one whenever it (re)opens its stream.
DEMO_TOKEN_TTL = 900
#: The sample invoicing events the page can send.
KINDS = ("invoice.created", "invoice.sent", "invoice.paid", "invoice.overdue")

#: The channel every demo page is subscribed to: its presence is who is online.
ONLINE_CHANNEL = "demo:online"
#: The namespace of :data:`ONLINE_CHANNEL` in demo mode, unless one named ``demo`` is
#: configured. Forced join/leave: ``/events`` clients cannot ask for the pushes.
DEMO_NAMESPACE = NamespaceSettings(
    name="demo", presence=True, join_leave=True, force_push_join_leave=True
)

_HERE = Path(__file__).resolve().parent
_USER = re.compile(r"^[a-z0-9_-]{1,32}\Z")
_AMOUNT = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,2})?\Z")
_STATIC = {
    "/demo/demo.js": ("demo.js", "text/javascript"),
    "/demo/demo.css": ("demo.css", "text/css"),
    # The service worker of "Notify me when the tab is closed", at the root so that its
    # scope is the whole page without a Service-Worker-Allowed header.
    "/sw.js": ("sw.js", "text/javascript"),
}
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(_HERE / "index.html", headers=_PAGE_HEADERS)


async def _static(request: web.Request) -> web.StreamResponse:
    name, content_type = _STATIC[request.path]
    return web.FileResponse(
        _HERE / name, headers={**_PAGE_HEADERS, hdrs.CONTENT_TYPE: content_type}
    )


async def _pointer(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "service": "tidings",
            "version": __version__,
            "endpoints": [
                "/connection/websocket",
                "/connection/uni_websocket",
                "/connection/uni_sse",
                "/events",
                "/api/<method> (publish, broadcast, history, batch, …)",
                "/push/key, /push/subscribe, /push/unsubscribe (Web Push)",
                "/metrics",
                "/healthz",
                "/readyz",
            ],
            "docs": "README.md: quick start, configuration, client protocol, operations",
            "demo": "the demo page is served here in demo mode (tidings serve --demo)",
        }
    )


async def _token(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    secret = node.settings.auth.hmac_secret
    if not secret:
        return _error(503, "demo tokens are signed with auth.hmac_secret, which is not set")
    user = request.query.get("user", "")
    if not _USER.match(user):
        return _error(400, "user must be 1-32 characters of a-z, 0-9, '_' or '-'")
    channels = [f"user#{user}", ONLINE_CHANNEL]
    token = mint_token(secret, user, ttl=DEMO_TOKEN_TTL, channels=channels, clock=node.clock)
    return web.json_response(
        {"token": token, "user": user, "channels": channels, "expires_in": DEMO_TOKEN_TTL},
        headers={"Cache-Control": "no-store"},
    )


async def _presence(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    options = node.options_for(ONLINE_CHANNEL)
    if options is None or not options.presence:
        return _error(503, f"the configured namespace of {ONLINE_CHANNEL} keeps no presence")
    members = node.presence(ONLINE_CHANNEL)
    return web.json_response(
        {
            "channel": ONLINE_CHANNEL,
            "presence": {cid: {"user": i.user, "client": i.client} for cid, i in members.items()},
        },
        headers={"Cache-Control": "no-store"},
    )


def _amount(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    if not _AMOUNT.match(text):
        return None
    try:
        return f"{Decimal(text):.2f}"
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        return None


async def _publish(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    origin = request.headers.get(hdrs.ORIGIN)
    if not origin_allowed(
        origin, request.headers.get(hdrs.HOST), node.settings.server.allowed_origins
    ):
        return _error(403, "origin not allowed")
    if request.content_type != "application/json":
        # Also keeps a cross-site form from posting here: JSON needs a CORS preflight.
        return _error(415, "send the event as application/json")
    try:
        body: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    user, kind, invoice = body.get("user"), body.get("kind"), body.get("invoice")
    amount = _amount(body.get("amount"))
    if not isinstance(user, str) or not _USER.match(user):
        return _error(400, "user must be 1-32 characters of a-z, 0-9, '_' or '-'")
    if kind not in KINDS:
        return _error(400, f"kind must be one of {', '.join(KINDS)}")
    if isinstance(invoice, bool) or not isinstance(invoice, int) or not 0 < invoice < 10**9:
        return _error(400, "invoice must be a whole number from 1 to 999999999")
    if amount is None:
        return _error(400, 'amount must be a decimal like "120.00"')
    channel = f"user#{user}"
    event = {"kind": kind, "invoice": invoice, "amount": amount, "user": user}
    try:
        await node.publish([channel], event)
    except PublishError as exc:
        return _error(400, str(exc))
    return web.json_response({"result": {"channel": channel, "data": event}})


def demo_settings(settings: Settings) -> Settings:
    """``settings`` with :data:`DEMO_NAMESPACE` added in demo mode; a ``demo`` namespace of
    the configuration is kept as written, and outside demo mode nothing changes."""
    if not settings.server.demo or settings.namespace(DEMO_NAMESPACE.name) is not None:
        return settings
    return dataclasses.replace(settings, namespaces=[*settings.namespaces, DEMO_NAMESPACE])


def add_demo_routes(app: web.Application, settings: Settings) -> None:
    """Registers ``/``: the demo page and its helpers in demo mode, else a JSON pointer."""
    if not settings.server.demo:
        app.router.add_get("/", _pointer)
        return
    app.router.add_get("/", _index)
    for path in _STATIC:
        app.router.add_get(path, _static)
    app.router.add_get("/demo/token", _token)
    app.router.add_get("/demo/presence", _presence)
    app.router.add_post("/demo/publish", _publish)
