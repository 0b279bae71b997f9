"""Read receipts over plain HTTP, for pages that read an event stream (``/events``,
``/connection/uni_sse``) and so have no ``rpc``; the SDK's ``rpc`` reaches the same
methods (:mod:`tidings.receipt_calls`).

- ``POST /events/read`` with ``{"channel", "offsets": [n, …]}``, ``{"channel", "upto": n}``
  or both: ``{"result": {"unread": n, "exact": bool}}``;
- ``POST /events/unread`` with ``{"channel"}``: the same result, nothing marked.

Both are authenticated with the connection token the stream was opened with
(``Authorization: Bearer …``) and checked as :mod:`tidings.transport.bearer` says (JSON,
the origin, the size). The channels the connection reads are the token's ``channels``
(those of its stream); a channel naming the user (``inbox#alice``) is allowed as well.
An offset is the number after the colon of an event's ``id`` (``<epoch>:<offset>``).
"""

from __future__ import annotations

from aiohttp import hdrs, web

from tidings.appkeys import NODE
from tidings.node import Node
from tidings.receipts import READ, UNREAD
from tidings.transport.bearer import read_post, respond
from tidings.transport.cors import preflight

__all__ = ["MAX_BODY_BYTES", "READ_PATH", "UNREAD_PATH", "add_receipt_routes"]

READ_PATH = "/events/read"
UNREAD_PATH = "/events/unread"
#: Largest request body: a mark of 1,000 offsets of 16 digits.
MAX_BODY_BYTES = 20_000


async def _call(request: web.Request, method: str) -> web.Response:
    post = await read_post(request, MAX_BODY_BYTES)
    if isinstance(post, web.Response):
        return post
    node: Node = request.app[NODE]
    claims = post.claims
    outcome = await node.receipts.answer(method, claims.user, "", post.body, claims.channels)
    return respond(outcome, post.cors)


async def _read(request: web.Request) -> web.Response:
    return await _call(request, READ)


async def _unread(request: web.Request) -> web.Response:
    return await _call(request, UNREAD)


def add_receipt_routes(app: web.Application) -> None:
    """Registers ``/events/read`` and ``/events/unread`` and their CORS preflights."""
    app.router.add_post(READ_PATH, _read)
    app.router.add_post(UNREAD_PATH, _unread)
    answer = preflight("POST, OPTIONS", "Authorization, Content-Type")
    for path in (READ_PATH, UNREAD_PATH):
        app.router.add_route(hdrs.METH_OPTIONS, path, answer)
