"""The server API (``/api/*``, behind a key) and the operational endpoints.

- ``POST /api/publish`` ``{"channel": "...", "data": {...}}``
- ``POST /api/broadcast`` ``{"channels": ["...", ...], "data": {...}}``
- ``POST /api/info`` (or GET): node name, connections, subscriptions, uptime, position
- ``GET /healthz`` (the process answers), ``GET /readyz`` (the log is connected and warm),
  ``GET /metrics`` (Prometheus text)

The key comes in ``X-API-Key`` or ``Authorization: apikey <key>`` and is compared in
constant time. Errors are JSON ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from aiohttp import web

from tidings import __version__
from tidings.appkeys import NODE
from tidings.node import Node, PublishError

__all__ = ["add_routes"]

log = logging.getLogger(__name__)
#: Largest server API request body accepted.
_MAX_BODY = 1 << 20


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"code": status, "message": message}}),
        status=status,
        content_type="application/json",
    )


def _result(result: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps({"result": result}), content_type="application/json")


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
        return _error(413, "request body too large")
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(400, f"body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    return body


def _guard(handler: Any) -> Any:
    """Wraps an API handler with the key check and the request metric."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        node: Node = request.app[NODE]
        key = node.settings.api.key
        method = handler.__name__.removeprefix("api_")
        if key is None:
            response: web.StreamResponse = _error(
                403, "the server API is disabled: set api.key (TIDINGS_API_KEY) to enable it"
            )
        elif not _authorized(request, key):
            response = _error(401, "missing or wrong API key")
        else:
            response = await handler(request, node)
        node.metrics.api_requests.labels(method, str(response.status)).inc()
        return response

    wrapped.__name__ = handler.__name__
    return wrapped


async def _publish(node: Node, channels: list[str], data: Any) -> web.Response:
    try:
        await node.publish(channels, data)
    except PublishError as exc:
        return _error(400, str(exc))
    except Exception as exc:  # the log is down: tell the caller, do not pretend
        log.warning("publish failed: %s", exc)
        return _error(503, f"publish failed: {exc}")
    return _result({})


async def api_publish(request: web.Request, node: Node) -> web.Response:
    """Publishes ``data`` to one ``channel``."""
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    channel = body.get("channel")
    if not isinstance(channel, str) or not channel:
        return _error(400, "field 'channel' must be a non-empty string")
    if "data" not in body:
        return _error(400, "field 'data' is required")
    return await _publish(node, [channel], body["data"])


async def api_broadcast(request: web.Request, node: Node) -> web.Response:
    """Publishes ``data`` to several ``channels`` (one event, one position)."""
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    channels = body.get("channels")
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(c, str) and c for c in channels)
    ):
        return _error(400, "field 'channels' must be a non-empty list of strings")
    if "data" not in body:
        return _error(400, "field 'data' is required")
    return await _publish(node, channels, body["data"])


async def api_info(request: web.Request, node: Node) -> web.Response:
    """What this node holds."""
    return _result(info(node))


def info(node: Node) -> dict[str, Any]:
    """The node's state as plain data."""
    return {
        "node": node.name,
        "version": __version__,
        "connections": node.connections,
        "subscriptions": node.hub.subscriptions,
        "channels": sum(1 for _ in node.hub.channels()),
        "uptime": int(node.clock() - node.started_at),
        "epoch": node.log.epoch,
        "position": node.head,
        "ready": node.ready,
    }


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
    app.router.add_post("/api/publish", _guard(api_publish))
    app.router.add_post("/api/broadcast", _guard(api_broadcast))
    app.router.add_post("/api/info", _guard(api_info))
    app.router.add_get("/api/info", _guard(api_info))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
