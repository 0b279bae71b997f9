"""Checks made before a client connection is accepted: origin, draining, rate, capacity."""

from __future__ import annotations

import logging

from aiohttp import web

from tidings.node import Node
from tidings.transport.origin import origin_allowed

__all__ = ["client_ip", "refuse_early"]

log = logging.getLogger(__name__)


def client_ip(request: web.Request) -> str:
    """The peer address of the request (proxies are not trusted for this)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return request.remote or "?"


def refuse_early(request: web.Request, node: Node) -> web.Response | None:
    """An HTTP refusal when the connection must not be opened, else None."""
    if not origin_allowed(
        request.headers.get("Origin"),
        request.headers.get("Host"),
        node.settings.server.allowed_origins,
    ):
        node.metrics.refused.labels("origin").inc()
        log.info("refused a connection from origin %r", request.headers.get("Origin"))
        return web.json_response(
            {"error": "origin not allowed", "origin": request.headers.get("Origin")}, status=403
        )
    if node.draining:
        node.metrics.refused.labels("draining").inc()
        return web.json_response({"error": "server is shutting down"}, status=503)
    limit = node.settings.client.max_connections
    if limit and node.connections >= limit:
        node.metrics.refused.labels("capacity").inc()
        return web.json_response(
            {"error": "connection limit reached (client.max_connections)"}, status=503
        )
    if not node.admit_ip(client_ip(request)):
        node.metrics.refused.labels("rate").inc()
        return web.json_response(
            {
                "error": "too many new connections from this address "
                "(client.connections_per_ip_per_second)"
            },
            status=429,
            headers={"Retry-After": "1"},
        )
    return None
