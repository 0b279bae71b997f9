"""Web Push registration over plain HTTP, for pages that do not use the SDK (whose
``rpc`` reaches the same methods: :mod:`tidings.webpush.calls`).

- ``GET /push/key``: ``{"result": {"key": …}}``, the VAPID public key (the page's
  ``applicationServerKey``); public, no token.
- ``POST /push/subscribe`` with ``PushSubscription.toJSON()``: ``{"result": {}}``.
- ``POST /push/unsubscribe`` with ``{"endpoint": …}``: ``{"result": {"removed": …}}``.

The two posts are authenticated with a connection token (``Authorization: Bearer …``, the
token the page connects with) and checked as :mod:`tidings.transport.bearer` says (JSON,
the origin, the size). Errors are ``{"error": message, "code": n}`` with the code of the
RPC method's error.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from tidings.appkeys import NODE
from tidings.node import Node
from tidings.transport.bearer import read_post, respond
from tidings.transport.cors import cors_headers, preflight
from tidings.webpush import calls

__all__ = ["MAX_BODY_BYTES", "add_webpush_routes"]

#: Largest request body (a subscription is a few hundred bytes).
MAX_BODY_BYTES = 8192


async def _key(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    outcome = await calls.answer(node.web_push, calls.KEY, "", None)
    return respond(outcome, cors_headers(request))


async def _call(request: web.Request, method: str) -> web.Response:
    post = await read_post(request, MAX_BODY_BYTES)
    if isinstance(post, web.Response):
        return post
    node: Node = request.app[NODE]
    outcome = await calls.answer(node.web_push, method, post.claims.user, post.body)
    return respond(outcome, post.cors)


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
