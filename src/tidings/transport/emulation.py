"""The emulation endpoint (``POST /emulation``) and this worker's emulated sessions.

A client on ``/connection/http_stream`` or ``/connection/sse`` reads from its stream and
posts every later command here. The post may reach any worker of any node (a load
balancer spreads requests, ``SO_REUSEPORT`` spreads them among a node's workers), so it
names the worker holding the session (``node``, from the connect result). A post for this
worker is handed to the session at once; one for another worker goes through the
:class:`Relay` (RabbitMQ's control plane, ``cluster.py``), addressed by that worker's id.

Answers, as the ``centrifuge`` SDK reads them:

- **204** the commands were handed to the session's worker. Replies come on the stream.
  A session that has ended gets 204 as well: its stream has ended, or is ending, and the
  SDK reconnects from there.
- **404** no worker has that id (it stopped or restarted): the SDK closes its transport
  and reconnects at once instead of waiting for its command timeout.
- **400** not an emulation request; **413** over the size limit; **403** origin not
  allowed; **503** the way to the other worker (the broker) is down: the SDK reconnects.

The session id is the capability to act as the connection (the token is not sent again),
so it is made with :func:`secrets.token_urlsafe`, travels only in the connect reply and
the posts, and is never logged.
"""

from __future__ import annotations

import logging
import secrets
from typing import Protocol

from aiohttp import hdrs, web

from tidings.appkeys import NODE
from tidings.node import Node
from tidings.protocol.emulation import (
    BadEmulationRequest,
    EmulationRequest,
    decode_emulation_request,
)
from tidings.protocol.handshake import Refusal
from tidings.protocol.session import EmulationIds
from tidings.transport.cors import cors_headers, preflight
from tidings.transport.gate import as_response
from tidings.transport.origin import origin_allowed

__all__ = [
    "EMULATION",
    "EMULATION_PATH",
    "Emulated",
    "Emulation",
    "Relay",
    "RelayUnavailable",
    "UnknownWorker",
    "add_emulation_route",
    "new_worker_id",
    "read_limited",
]

log = logging.getLogger(__name__)

EMULATION_PATH = "/emulation"
#: JSON string escapes may double a frame (and ``\\uXXXX`` make it six times longer);
#: twice the frame limit and a little room for the ids is what honest clients need.
_BODY_FACTOR = 2
_BODY_SLACK = 1024


class Emulated(Protocol):
    """An emulated connection as the registry sees it."""

    def receive(self, data: bytes) -> None:
        """Processes a posted command frame, as if it had come on the stream."""


class UnknownWorker(LookupError):
    """No worker has the id a request names (answered 404)."""


class RelayUnavailable(ConnectionError):
    """The way to other workers is down for now (answered 503)."""


class Relay(Protocol):
    """Carries a request to the worker it names, in another process or on another node."""

    async def forward(self, request: EmulationRequest) -> None:
        """Hands ``request`` to its worker (which delivers it to the session, if any).

        Raises:
            UnknownWorker: no worker has ``request.node``.
            RelayUnavailable: the relay cannot reach its broker now.
        """


def new_worker_id(name: str) -> str:
    """An id for this worker process, new at every start: a restarted worker is never
    taken for the one it replaced (whose sessions are gone)."""
    return f"{name}.{secrets.token_hex(6)}"


class Emulation:
    """This worker's emulated sessions by id, and the relay to the other workers'.

    Args:
        worker: this worker's id, as clients post it back in ``node``.
    """

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.relay: Relay | None = None
        self._sessions: dict[str, Emulated] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def register(self, conn: Emulated) -> EmulationIds:
        """A new, unguessable session id for ``conn``; posts with it reach ``conn``."""
        session = secrets.token_urlsafe(24)
        while session in self._sessions:  # pragma: no cover - 2**-192
            session = secrets.token_urlsafe(24)
        self._sessions[session] = conn
        return EmulationIds(session, self.worker)

    def unregister(self, session: str) -> None:
        """``session`` ended: posts with its id are dropped from now on."""
        self._sessions.pop(session, None)

    def deliver(self, session: str, data: bytes) -> bool:
        """Hands ``data`` to a session of this worker; False when there is none."""
        conn = self._sessions.get(session)
        if conn is None:
            return False
        conn.receive(data)
        return True

    async def route(self, request: EmulationRequest) -> None:
        """Delivers ``request`` here or forwards it to its worker.

        Raises:
            UnknownWorker: the request names another worker and none has that id.
            RelayUnavailable: the request names another worker, which cannot be reached now.
        """
        if request.node == self.worker:
            self.deliver(request.session, request.data)
            return
        if self.relay is None:
            # One process and no broker: there is no other worker.
            raise UnknownWorker(request.node)
        await self.relay.forward(request)


EMULATION: web.AppKey[Emulation] = web.AppKey("emulation", Emulation)


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is over ``limit`` bytes (read no further)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _refused(status: int, error: str, cors: dict[str, str]) -> web.Response:
    response = as_response(Refusal(status, error))
    response.headers.update(cors)
    return response


async def handle_emulation(request: web.Request) -> web.StreamResponse:
    """``POST /emulation``: a command frame for an emulated session (see the module)."""
    node: Node = request.app[NODE]
    settings = node.settings
    if not origin_allowed(
        request.headers.get(hdrs.ORIGIN),
        request.headers.get(hdrs.HOST),
        settings.server.allowed_origins,
    ):
        node.metrics.refused.labels("origin").inc()
        return as_response(Refusal(403, "origin not allowed"))
    cors = cors_headers(request)
    frame_limit = settings.client.max_frame_bytes
    body_limit = frame_limit * _BODY_FACTOR + _BODY_SLACK
    body = await read_limited(request, body_limit)
    if body is None:
        return _refused(413, f"request over {body_limit} bytes", cors)
    try:
        posted = decode_emulation_request(body, frame_limit)
    except BadEmulationRequest as exc:
        return _refused(400, f"bad emulation request: {exc}", cors)
    emulation = request.app[EMULATION]
    try:
        await emulation.route(posted)
    except UnknownWorker:
        # The id names a worker, not a secret: it may be logged.
        log.debug("emulation request for unknown worker %r", posted.node)
        return _refused(404, "unknown node (the worker holding the session is gone)", cors)
    except RelayUnavailable as exc:
        log.warning("emulation request for worker %r not forwarded: %s", posted.node, exc)
        return _refused(503, "the session's worker cannot be reached now", cors)
    return web.Response(status=204, headers=cors)


def add_emulation_route(app: web.Application, emulation: Emulation) -> None:
    """Registers ``POST /emulation`` and its CORS preflight, serving ``emulation``."""
    app[EMULATION] = emulation
    app.router.add_post(EMULATION_PATH, handle_emulation)
    answer = preflight("POST, OPTIONS", "Content-Type")
    app.router.add_route(hdrs.METH_OPTIONS, EMULATION_PATH, answer)
