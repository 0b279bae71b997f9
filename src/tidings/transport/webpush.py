"""Web Push registration over plain HTTP, for pages that do not use the SDK (whose
``rpc`` reaches the same methods: :mod:`tidings.webpush.calls`).

- ``GET /push/key``: ``{"result": {"key": …}}``, the VAPID public key (the page's
  ``applicationServerKey``); public, no token.
- ``POST /push/subscribe`` with ``PushSubscription.toJSON()``: ``{"result": {}}``.
- ``POST /push/unsubscribe`` with ``{"endpoint": …}``: ``{"result": {"removed": …}}``.

The two posts are authenticated with a connection token (``Authorization: Bearer …``, the
token the page connects with), need ``Content-Type: application/json`` (so a cross-site
form cannot post, and a cross-site ``fetch`` needs a CORS preflight) and are refused from
an origin that ``server.allowed_origins`` does not admit, like an event stream. Errors
are ``{"error": message, "code": n}`` with the code of the RPC method's error.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import hdrs, web

from tidings.appkeys import NODE
from tidings.codes import ErrorCode
from tidings.errors import TokenError
from tidings.node import Node
from tidings.protocol.operations import Answered, Rejected
from tidings.transport.cors import cors_headers, preflight
from tidings.transport.origin import origin_allowed
from tidings.webpush import calls

__all__ = ["MAX_BODY_BYTES", "add_webpush_routes"]

#: Largest request body (a subscription is a few hundred bytes).
MAX_BODY_BYTES = 8192

#: HTTP status of each error code the methods answer.
_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.METHOD_NOT_FOUND: 404,
    ErrorCode.NOT_AVAILABLE: 404,
    ErrorCode.LIMIT_EXCEEDED: 409,
    ErrorCode.INTERNAL: 503,
}


def _error(status: int, message: str, code: int, headers: Mapping[str, str]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message, "code": code}),
        content_type="application/json",
        headers=headers,
    )


def _respond(outcome: Answered | Rejected, headers: Mapping[str, str]) -> web.Response:
    if isinstance(outcome, Rejected):
        status = _STATUS.get(ErrorCode(outcome.code), 400)
        return _error(status, outcome.message, outcome.code, headers)
    return web.Response(
        body=b'{"result":%b}' % (outcome.data or b"{}"),
        content_type="application/json",
        headers={**headers, hdrs.CACHE_CONTROL: "no-store"},
    )


async def _key(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    outcome = await calls.answer(node.web_push, calls.KEY, "", None)
    return _respond(outcome, cors_headers(request))


async def _call(request: web.Request, method: str) -> web.Response:
    node: Node = request.app[NODE]
    cors = cors_headers(request)
    origin = request.headers.get(hdrs.ORIGIN)
    host = request.headers.get(hdrs.HOST)
    if not origin_allowed(origin, host, node.settings.server.allowed_origins):
        node.metrics.refused.labels("origin").inc()
        return _error(403, "origin not allowed", int(ErrorCode.PERMISSION_DENIED), cors)
    unauthorized, bad = int(ErrorCode.UNAUTHORIZED), int(ErrorCode.BAD_REQUEST)
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        missing = "a connection token is needed (Authorization: Bearer)"
        return _error(401, missing, unauthorized, cors)
    try:
        claims = node.authenticate(token.strip())
    except TokenError as exc:
        return _error(401, exc.reason, unauthorized, cors)
    if request.content_type != "application/json":
        return _error(415, "send JSON (Content-Type: application/json)", bad, cors)
    too_large = f"body over {MAX_BODY_BYTES} bytes"
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _error(413, too_large, bad, cors)
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _error(413, too_large, bad, cors)
    return _respond(await calls.answer(node.web_push, method, claims.user, body), cors)


async def _subscribe(request: web.Request) -> web.Response:
    return await _call(request, calls.SUBSCRIBE)


async def _unsubscribe(request: web.Request) -> web.Response:
    return await _call(request, calls.UNSUBSCRIBE)


def add_webpush_routes(app: web.Application) -> None:
    """Registers ``/push/key``, ``/push/subscribe``, ``/push/unsubscribe`` and the posts'
    CORS preflights (they answer 404 where ``[web_push]`` is not set)."""
    app.router.add_get("/push/key", _key)
    app.router.add_post("/push/subscribe", _subscribe)
    app.router.add_post("/push/unsubscribe", _unsubscribe)
    answer = preflight("POST, OPTIONS", "Authorization, Content-Type")
    for path in ("/push/subscribe", "/push/unsubscribe"):
        app.router.add_route(hdrs.METH_OPTIONS, path, answer)
