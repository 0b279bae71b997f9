"""JSON posts of pages that do not use the SDK (Web Push registration, read receipts):
authenticated with the page's connection token, answered like the RPC methods they
stand for.

A post needs ``Authorization: Bearer <connection token>`` (the token the page connects
with), ``Content-Type: application/json`` (so a cross-site form cannot post, and a
cross-site ``fetch`` needs a CORS preflight), a body of at most the endpoint's size, and
an origin that ``server.allowed_origins`` admits, like an event stream. Answers are
``{"result": …}``, or ``{"error": message, "code": n}`` with the RPC method's error code
and an HTTP status for it.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import hdrs, web

from tidings.appkeys import NODE
from tidings.auth import ConnectionClaims
from tidings.codes import ErrorCode
from tidings.errors import TokenError
from tidings.protocol.operations import Answered, Rejected
from tidings.transport.cors import cors_headers
from tidings.transport.origin import origin_allowed

__all__ = ["BearerPost", "bearer_token", "error", "read_post", "respond"]

#: HTTP status of each error code the methods answer.
_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.METHOD_NOT_FOUND: 404,
    ErrorCode.NOT_AVAILABLE: 404,
    ErrorCode.LIMIT_EXCEEDED: 409,
    ErrorCode.INTERNAL: 503,
}


def bearer_token(request: web.Request) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or "" without one."""
    scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def error(status: int, message: str, code: int, headers: Mapping[str, str]) -> web.Response:
    """``{"error": message, "code": code}`` with ``status``."""
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message, "code": code}),
        content_type="application/json",
        headers=headers,
    )


def respond(outcome: Answered | Rejected, headers: Mapping[str, str]) -> web.Response:
    """A method's outcome as the answer: its result, or its error with a status."""
    if isinstance(outcome, Rejected):
        status = _STATUS.get(ErrorCode(outcome.code), 400)
        return error(status, outcome.message, outcome.code, headers)
    return web.Response(
        body=b'{"result":%b}' % (outcome.data or b"{}"),
        content_type="application/json",
        headers={**headers, hdrs.CACHE_CONTROL: "no-store"},
    )


class BearerPost:
    """An accepted post: who sent it, its body and the CORS headers of the answer."""

    __slots__ = ("body", "claims", "cors")

    def __init__(self, claims: ConnectionClaims, body: bytes, cors: Mapping[str, str]) -> None:
        self.claims = claims
        self.body = body
        self.cors = cors


async def read_post(request: web.Request, max_bytes: int) -> BearerPost | web.Response:
    """Checks the origin, the token, the content type and the size, and reads the body;
    the refusal's answer when one fails (403, 401, 415, 413)."""
    node = request.app[NODE]
    cors = cors_headers(request)
    origin = request.headers.get(hdrs.ORIGIN)
    host = request.headers.get(hdrs.HOST)
    if not origin_allowed(origin, host, node.settings.server.allowed_origins):
        node.metrics.refused.labels("origin").inc()
        return error(403, "origin not allowed", int(ErrorCode.PERMISSION_DENIED), cors)
    unauthorized, bad = int(ErrorCode.UNAUTHORIZED), int(ErrorCode.BAD_REQUEST)
    token = bearer_token(request)
    if not token:
        missing = "a connection token is needed (Authorization: Bearer)"
        return error(401, missing, unauthorized, cors)
    try:
        claims = node.authenticate(token)
    except TokenError as exc:
        return error(401, exc.reason, unauthorized, cors)
    if request.content_type != "application/json":
        return error(415, "send JSON (Content-Type: application/json)", bad, cors)
    too_large = f"body over {max_bytes} bytes"
    if request.content_length is not None and request.content_length > max_bytes:
        return error(413, too_large, bad, cors)
    body = await request.content.read(max_bytes + 1)
    if len(body) > max_bytes:
        return error(413, too_large, bad, cors)
    return BearerPost(claims, body, cors)
