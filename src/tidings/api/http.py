"""The server API over HTTP (``POST /api/<method>``, behind a key) and the operational endpoints.

The body of ``POST /api/publish`` is the method's request and the answer, with HTTP 200,
is what :func:`tidings.api.methods.call` returns; ``POST /api/batch`` runs
:func:`~tidings.api.methods.batch`. HTTP statuses are kept for what is not a method's
answer: 401 a missing or wrong key, 403 the API disabled (no ``api.key``), 404 an unknown
method, 400 a body that is not a JSON object, 413 a body over 1 MiB.

Also ``GET /api/info``, ``GET /healthz`` (the process answers), ``GET /readyz`` (the log is
connected and warm) and ``GET /metrics`` (Prometheus text).
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web

from tidings.api.methods import METHODS, batch, call
from tidings.appkeys import NODE
from tidings.node import Node

__all__ = ["add_routes", "api", "healthz", "metrics", "readyz"]

#: Largest server API request body accepted.
_MAX_BODY = 1 << 20


def _http_error(status: int, message: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"code": status, "message": message}}),
        status=status,
        content_type="application/json",
    )


def _authorized(request: web.Request, key: str) -> bool:
    given = request.headers.get("X-API-Key")
    if given is None:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "apikey":
            given = value.strip()
    if not given:
        return False
    return hmac.compare_digest(given.encode(), key.encode())


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return _http_error(413, "request body too large")
    raw = await request.read()
    if not raw.strip():
        return {}  # e.g. info with no body at all
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _http_error(400, f"body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _http_error(400, "body must be a JSON object")
    return body


async def _serve(request: web.Request, node: Node, method: str) -> web.Response:
    if method != "batch" and method not in METHODS:
        return _http_error(404, f"no server API method {method[:50]!r}")
    body: dict[str, Any] = {}
    if request.method == "POST":
        read = await _body(request)
        if isinstance(read, web.Response):
            return read
        body = read
    answer = await batch(node, body) if method == "batch" else await call(node, method, body)
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def api(request: web.Request) -> web.StreamResponse:
    """``/api/<method>``: the key check, the method, the request metric."""
    node: Node = request.app[NODE]
    key = node.settings.api.key
    method = request.match_info["method"]
    if key is None:
        response = _http_error(
            403, "the server API is disabled: set api.key (TIDINGS_API_KEY) to enable it"
        )
    elif not _authorized(request, key):
        response = _http_error(401, "missing or wrong API key")
    else:
        response = await _serve(request, node, method)
    label = method if method in METHODS or method == "batch" else "unknown"
    node.metrics.api_requests.labels(label, str(response.status)).inc()
    return response


async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The node serves: its log is connected and warm, and it is not shutting down."""
    node: Node = request.app[NODE]
    if node.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready"}, status=503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    node: Node = request.app[NODE]
    return web.Response(body=node.metrics.render(), content_type="text/plain", charset="utf-8")


def add_routes(app: web.Application) -> None:
    """Registers the API and operational routes."""
    app.router.add_post("/api/{method}", api)
    # Only info reads nothing and changes nothing, so only it answers a GET too.
    app.router.add_get("/api/{method:info}", api)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
