"""Cross-origin (CORS) answers for the HTTP transports a page reaches with ``fetch`` or
``EventSource``: event streams, HTTP streams and the emulation endpoint.

An origin gets CORS headers only when ``server.allowed_origins`` admits it (the same check
as a WebSocket upgrade), so a foreign page can neither read a stream nor post commands.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from tidings.appkeys import NODE
from tidings.protocol.handshake import Refusal
from tidings.transport.gate import as_response
from tidings.transport.origin import origin_allowed

__all__ = ["cors_headers", "preflight"]


def cors_headers(request: web.Request) -> dict[str, str]:
    """CORS response headers for an allowed cross-origin request, else none."""
    origin = request.headers.get(hdrs.ORIGIN)
    allowed = request.app[NODE].settings.server.allowed_origins
    if origin is None or not origin_allowed(origin, request.headers.get(hdrs.HOST), allowed):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def preflight(methods: str, headers: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``OPTIONS`` handler of an endpoint that accepts ``methods`` with ``headers``."""

    async def answer(request: web.Request) -> web.Response:
        cors = cors_headers(request)
        if not cors:
            return as_response(Refusal(403, "origin not allowed"))
        return web.Response(
            status=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": headers,
                "Access-Control-Max-Age": "600",
            },
        )

    return answer
