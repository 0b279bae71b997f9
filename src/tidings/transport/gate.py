"""Checks made before a client connection is accepted: origin, draining, capacity, rate.

One implementation over plain header values and the peer address, so the front (raw
WebSocket upgrades) and aiohttp (event streams) refuse alike: same statuses, bodies,
metrics and logs.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from tidings.node import Node
from tidings.protocol.handshake import Refusal
from tidings.transport.origin import origin_allowed

__all__ = ["as_response", "client_ip", "peer_ip", "refusal", "refuse_early"]

log = logging.getLogger(__name__)


def peer_ip(transport: asyncio.BaseTransport | None) -> str:
    """The peer address of a connection (proxies are not trusted for this)."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "?"


def client_ip(request: web.Request) -> str:
    """The peer address of the request (proxies are not trusted for this)."""
    ip = peer_ip(request.transport)
    if ip == "?":
        return request.remote or "?"
    return ip


def refusal(node: Node, *, origin: str | None, host: str | None, ip: str) -> Refusal | None:
    """Why a connection must not be opened, or None; counts and logs a refusal.

    Args:
        node: the node whose settings, state and metrics decide.
        origin: the request's ``Origin`` header.
        host: the request's ``Host`` header.
        ip: the peer address (counted against the per-address rate when all else passes).
    """
    if not origin_allowed(origin, host, node.settings.server.allowed_origins):
        node.metrics.refused.labels("origin").inc()
        log.info("refused a connection from origin %r", origin)
        return Refusal(403, "origin not allowed", (("origin", origin or ""),))
    if node.draining:
        node.metrics.refused.labels("draining").inc()
        return Refusal(503, "server is shutting down")
    limit = node.settings.client.max_connections
    if limit and node.connections >= limit:
        node.metrics.refused.labels("capacity").inc()
        return Refusal(503, "connection limit reached (client.max_connections)")
    if not node.admit_ip(ip):
        node.metrics.refused.labels("rate").inc()
        return Refusal(
            429,
            "too many new connections from this address (client.connections_per_ip_per_second)",
            headers=(("Retry-After", "1"),),
        )
    return None


def as_response(refused: Refusal) -> web.Response:
    """``refused`` as an aiohttp response."""
    return web.Response(
        status=refused.status,
        body=refused.body,
        content_type="application/json",
        headers=dict(refused.headers),
    )


def refuse_early(request: web.Request, node: Node) -> web.Response | None:
    """:func:`refusal` for an aiohttp request, as a response."""
    refused = refusal(
        node,
        origin=request.headers.get("Origin"),
        host=request.headers.get("Host"),
        ip=client_ip(request),
    )
    return None if refused is None else as_response(refused)
