"""Server-sent events: ``/connection/uni_sse`` and ``/events``, for a native ``EventSource``.

Both endpoints stream ``text/event-stream``; they differ only in how the client connects:

- ``/connection/uni_sse`` (compatible with the Centrifugo unidirectional SSE transport):
  the connect request is the ``cf_connect`` query parameter (URL-encoded JSON) or, with
  POST, the JSON body. Keep-alives are ``data: {}`` events, as that protocol has them.
- ``/events``: the connection token comes from ``?token=``, the ``tidings_token`` cookie or
  ``Authorization: Bearer`` (non-browser clients). Keep-alives are ``: ping`` comments,
  which an ``EventSource`` swallows.

Either way the channels are the token's server-side ``channels`` claim: a push-only client
cannot subscribe by itself. The first event is the connect push (``{"connect": {...}}``),
then every publication as its unidirectional push (``{"channel": ..., "pub": ...}``).

**Ids and recovery.** Every event that carries a position has ``id: <epoch>:<offset>``,
so a browser that reconnects by itself sends ``Last-Event-ID`` and the stream resumes
where it stopped (``?last_event_id=`` does the same for a page that reopens the stream
itself, since a browser sends the header only on its own reconnects). The id's format,
and why the epoch is in it, is :mod:`tidings.protocol.eventstream`'s, which builds every
byte of the body; this module is the transport around it. One position serves all
of the stream's channels (a position is an offset in the one log). The server recovers
each channel from it through the node's atomic subscribe-and-snapshot, replays what was
missed in position order, each event with its own id, and then goes live, so nothing is
lost or repeated. A position older than a channel's history window is read
from the log first (:meth:`~tidings.node.Node.recover_from_log`, before the session
connects, with no await between the read and the subscribe). A channel that cannot be
recovered (another epoch, a position the log no longer holds or past a recovery's bounds)
gets a named ``gap`` event, ``{"channel", "recovered": false, "epoch",
"offset"}``: the page reloads that channel's state; events after ``offset`` will follow.
A ``Last-Event-ID`` takes precedence over the positions in ``cf_connect``, which an
``EventSource`` repeats unchanged on every reconnect.

The connect event has an id as well: the position from which the stream is complete
(the recovered position, else the node's current one), so a client that drops before its
first publication still resumes without loss.

**Writes.** As for every long response (``transport/stream.py``): the headers through
aiohttp, then the body straight to the socket by :class:`SseConnection`, the shared
per-connection writer, in HTTP/1.1 chunked encoding (close-delimited for HTTP/1.0, as
some proxies still speak it to their upstreams). A publication caches its event and that
event as a complete chunk, so one bytes object serves every SSE subscriber, and a client
whose unsent bytes pass ``client.max_queue_bytes`` is cut (3008) as on WebSocket.
Errors before the stream starts (bad token, limits) are plain HTTP statuses, which stop
an ``EventSource`` instead of making it retry forever.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import hdrs, web

from tidings.appkeys import NODE
from tidings.auth import ConnectionClaims, SubscriptionClaims
from tidings.channels import ChannelName
from tidings.clientinfo import ClientInfo
from tidings.codes import DisconnectCode, close_reason, reconnects
from tidings.config import ChannelOptions
from tidings.errors import TokenError
from tidings.node import Node
from tidings.protocol import eventstream
from tidings.protocol.codec import ProtocolError, decode_connect_request
from tidings.protocol.messages import ConnectRequest, RecoverPosition
from tidings.protocol.operations import NotRecovered, Peer, Recovered
from tidings.protocol.session import Session, SubscribeOutcome
from tidings.publication import ChannelEvent, Publication
from tidings.subscription import HistoryPage, Subscriber
from tidings.transport.bearer import bearer_token
from tidings.transport.connection import WriterHost
from tidings.transport.cors import cors_headers, preflight
from tidings.transport.gate import client_ip, refuse_early
from tidings.transport.stream import StreamConnection, serve_stream

__all__ = ["SseConnection", "add_sse_routes"]

TOKEN_COOKIE = "tidings_token"
_EVENT_PING = eventstream.comment(b"ping")
_UNI_PING = eventstream.event(b"{}")
_REFUSAL_STATUS: dict[int, int] = {
    DisconnectCode.INVALID_TOKEN: 401,  # expired tokens too: a retry cannot succeed
    DisconnectCode.SHUTDOWN: 503,
    DisconnectCode.CONNECTION_LIMIT: 503,
    DisconnectCode.PERMISSION_DENIED: 403,  # the connect proxy refused
    DisconnectCode.INTERNAL_ERROR: 503,  # the connect proxy failed
}


def _without_id(pub: Publication) -> bytes:
    """``pub`` as an event with no id (it shares its position with the event after it)."""
    return eventstream.event(pub.uni)


class SseConnection(StreamConnection):
    """One event stream: pushes as SSE events, optionally inside HTTP chunks."""

    __slots__ = ("_last", "_ping")

    kind = "sse"

    def __init__(
        self,
        host: WriterHost,
        transport: asyncio.Transport,
        *,
        epoch: Callable[[], str],
        chunked: bool,
        ping: bytes,
        max_queue_bytes: int,
        peer: Peer | None = None,
    ) -> None:
        super().__init__(host, transport, _SseFraming(epoch, chunked), max_queue_bytes, peer)
        self._ping = ping
        self._last: Publication | None = None

    def deliver(self, pub: Publication) -> None:
        """Queues ``pub``; events of one position share one id, so only the last of them
        carries it: a drop between them then resumes at the position, not past the rest."""
        last = self._last
        self._last = pub
        pending = self._pending
        if (
            last is not None
            and last.offset == pub.offset
            and pending
            and pending[-1] is self._framing.line(last)
        ):
            pending[-1] = _without_id(last)
            self._single = None
        super().deliver(pub)

    def _farewell(self, code: int, reason: str) -> bytes:
        push = {"code": code, "reason": reason, "reconnect": reconnects(code)}
        return eventstream.event(orjson.dumps({"disconnect": push}))

    # ------------------------------------------------------------------ writer
    def send(self, lines: list[bytes]) -> None:
        """Queues the session's output (after connecting, only pings) as events."""
        ping = self._ping
        self.queue_events([ping if line == b"{}" else eventstream.event(line) for line in lines])

    def queue_events(self, events: list[bytes]) -> None:
        """Queues complete SSE events after whatever is pending."""
        super().send(events)


class _SseFraming:
    """Publications as SSE events (``id`` of the log's current epoch), in HTTP/1.1 chunks
    when the response is chunked, else as they are."""

    __slots__ = ("_chunked", "_epoch")

    def __init__(self, epoch: Callable[[], str], chunked: bool) -> None:
        self._epoch = epoch
        self._chunked = chunked

    def line(self, pub: Publication) -> bytes:
        return pub.sse(self._epoch())

    def single(self, pub: Publication) -> bytes:
        epoch = self._epoch()
        return pub.sse_chunk(epoch) if self._chunked else pub.sse(epoch)

    def batch(self, lines: list[bytes]) -> bytes:
        body = b"".join(lines)
        return eventstream.chunk(body) if self._chunked else body

    def event(self, event: ChannelEvent) -> bytes:
        # No id: a join or leave has no position of its own to resume from.
        return eventstream.event(event.uni)


@dataclasses.dataclass(slots=True)
class _Subscribed:
    requested: RecoverPosition | None
    outcome: SubscribeOutcome


class _StreamHost:
    """The node as an SSE session's host.

    Two differences, both at the point where a server-side subscription reaches the node:
    the stream's one position (its last event id) applies to every channel, although the
    session learns the channels only from the token; and the recovered publications are
    kept here, to be replayed as events of their own with their ids, instead of riding
    inside the connect push.
    """

    def __init__(
        self,
        node: Node,
        since: RecoverPosition | None,
        read: Mapping[str, Recovered | NotRecovered] | None = None,
    ) -> None:
        self._node = node
        self._since = since
        self._read = read or {}
        self.subscribed: dict[str, _Subscribed] = {}

    def subscribe(
        self, sub: Subscriber, channel: str, recover: RecoverPosition | None
    ) -> SubscribeOutcome:
        if self._since is not None:
            recover = self._since
        read = self._read.get(channel)
        if isinstance(read, Recovered) and recover is not None:
            # Read from the log up to where the window takes over (see _read_from_log).
            outcome = self._node.subscribe(
                sub, channel, RecoverPosition(read.position, recover.epoch)
            )
            if outcome.recovery is not None:
                options = self._node.options_for(channel)
                limit = options.recovery_max_publications if options is not None else 0
                joined = outcome.recovery.after_log(read.publications, limit)
                outcome = dataclasses.replace(outcome, recovery=joined)
        else:
            outcome = self._node.subscribe(sub, channel, recover)
        self.subscribed[channel] = _Subscribed(recover, outcome)
        recovery = outcome.recovery
        if recovery is None or not recovery.publications:
            return outcome
        return dataclasses.replace(outcome, recovery=dataclasses.replace(recovery, publications=()))

    def authenticate(self, token: str) -> ConnectionClaims:
        return self._node.authenticate(token)

    def verify_subscription(
        self, token: str, channel: str, user: str, client: str
    ) -> SubscriptionClaims:
        return self._node.verify_subscription(token, channel, user, client)

    def channel_options(self, channel: ChannelName) -> ChannelOptions | None:
        return self._node.channel_options(channel)

    def anonymous_allowed(self) -> bool:
        return self._node.anonymous_allowed()

    def admit(self, session: Session) -> DisconnectCode | None:
        return self._node.admit(session)

    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        self._node.unsubscribe(sub, channel)

    def recovers_from_log(self, channel: str, position: RecoverPosition) -> bool:
        # The stream's channels come from its token and were read before connecting.
        return False

    def release(self, session: Session) -> None:
        self._node.release(session)

    def count_error(self, code: int) -> None:
        self._node.count_error(code)

    def read_history(
        self, channel: str, limit: int, since: RecoverPosition | None, reverse: bool
    ) -> HistoryPage | None:
        return self._node.read_history(channel, limit, since, reverse)

    def proxies(self, event: str, method: str | None = None) -> bool:
        return self._node.proxies(event, method)

    def track(self, sub: Subscriber, channel: str, info: ClientInfo, push_join_leave: bool) -> None:
        self._node.track(sub, channel, info, push_join_leave)

    def presence(self, channel: str) -> Mapping[str, ClientInfo]:
        return self._node.presence(channel)

    def opening_events(self, connect_push: bytes) -> list[bytes]:
        """The connect event, the replayed publications in order, then one gap event per
        channel that could not be recovered."""
        epoch = self._node.log.epoch
        head = self._node.head
        replay: list[Publication] = []
        gaps: list[str] = []
        resumed_from: int | None = None
        for channel, entry in self.subscribed.items():
            recovery = entry.outcome.recovery
            if recovery is None:
                continue
            if not recovery.recovered:
                gaps.append(channel)
                continue
            replay.extend(recovery.publications)
            if entry.requested is not None:
                offset = entry.requested.offset
                resumed_from = offset if resumed_from is None else min(resumed_from, offset)
        # Publications of several channels share one log order; a stable sort keeps it.
        replay.sort(key=lambda pub: pub.offset)
        start = head if resumed_from is None else resumed_from
        events = [eventstream.event(connect_push, id=eventstream.event_id(epoch, start))]
        for i, pub in enumerate(replay):
            shares_next = i + 1 < len(replay) and replay[i + 1].offset == pub.offset
            events.append(_without_id(pub) if shares_next else pub.sse(epoch))
        for channel in gaps:
            gap = {"channel": channel, "recovered": False, "epoch": epoch, "offset": head}
            gap_id = eventstream.event_id(epoch, head)
            events.append(eventstream.event(orjson.dumps(gap), id=gap_id, name=b"gap"))
        return events


async def _read_from_log(
    node: Node, token: str, since: RecoverPosition | None
) -> dict[str, Recovered | NotRecovered]:
    """What the token's channels missed since the stream's last position, read from the
    log for those whose window no longer reaches it (nothing for other connections: a
    bad token is refused by the session, a connect proxy decides the channels later)."""
    if since is None or not token:
        return {}
    try:
        claims = node.authenticate(token)
    except TokenError:
        return {}
    channels = [c for c in dict.fromkeys(claims.channels) if node.recovers_from_log(c, since)]
    if not channels:
        return {}
    return await node.recover_from_log(channels, since)


# ---------------------------------------------------------------------- requests
class _BadRequest(ValueError):
    pass


def _since(request: web.Request) -> RecoverPosition | None:
    # The header is the browser's own reconnect, so it is newer than anything in the URL.
    text = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    return eventstream.parse_event_id(text) if text else None


async def _uni_connect_request(request: web.Request) -> ConnectRequest:
    if request.method == hdrs.METH_POST:
        limit = request.app[NODE].settings.client.max_frame_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _BadRequest(f"connect request over {limit} bytes")
        raw: str | bytes = await request.read()
    else:
        raw = request.query.get("cf_connect", "")
        if not raw:
            raise _BadRequest("cf_connect query parameter (connect request JSON) is missing")
    try:
        return decode_connect_request(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"connect request is not JSON: {exc}") from None
    except ProtocolError as exc:
        raise _BadRequest(str(exc)) from None


def _events_connect_request(request: web.Request) -> ConnectRequest:
    token = (
        bearer_token(request)
        or request.query.get("token", "")
        or request.cookies.get(TOKEN_COOKIE, "")
    )
    return ConnectRequest(token=token, name="sse")


def _json_error(
    status: int, message: str, headers: Mapping[str, str], **extra: Any
) -> web.Response:
    body = orjson.dumps({"error": message, **extra})
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


async def _serve(request: web.Request, *, native: bool) -> web.StreamResponse:
    node: Node = request.app[NODE]
    early = refuse_early(request, node)
    if early is not None:
        return early
    cors = cors_headers(request)
    try:
        connect = (
            _events_connect_request(request) if native else await _uni_connect_request(request)
        )
    except _BadRequest as exc:
        return _json_error(400, str(exc), cors)
    transport = request.transport
    if transport is None:  # the client left already
        return web.Response(status=400)
    chunked = request.version >= (1, 1)
    conn = SseConnection(
        node,
        transport,
        epoch=lambda: node.log.epoch,
        chunked=chunked,
        ping=_EVENT_PING if native else _UNI_PING,
        max_queue_bytes=node.settings.client.max_queue_bytes,
        peer=Peer.of(
            "sse" if native else "uni_sse",
            client_ip(request),
            request.headers,
            node.settings.proxy.http_headers,
        ),
    )
    since = _since(request)
    read = await _read_from_log(node, connect.token, since)
    # No await from here to the subscribe: the windows still cover where the reads ended.
    host = _StreamHost(node, since, read)
    now = node.monotonic()
    session = Session(
        host, conn, node.settings.client, now, bidirectional=False, wall_clock=node.clock()
    )
    conn.session = session
    # Connect before the response starts, so that a refusal is an HTTP status.
    session.connect_unidirectional(connect, now)
    for operation in session.take_operations():  # the connect proxy, when it decides
        outcome = await node.perform(operation, conn.peer)
        session.complete(operation, outcome, node.monotonic())
    code = session.close_code
    if code is not None:
        conn.finished()
        reason = session.close_reason or close_reason(code)
        return _json_error(_REFUSAL_STATUS.get(code, 400), reason, cors, code=code)
    # Synchronously after the subscribe: nothing live can be queued before the replay.
    conn.queue_events(host.opening_events(b"".join(session.take_output())))
    response = web.StreamResponse(
        headers={
            **cors,
            hdrs.CACHE_CONTROL: "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    return await serve_stream(request, node, conn, response, chunked=chunked)


async def handle_uni_sse(request: web.Request) -> web.StreamResponse:
    """``/connection/uni_sse``: the connect request in ``cf_connect`` or a POST body."""
    return await _serve(request, native=False)


async def handle_events(request: web.Request) -> web.StreamResponse:
    """``/events``: the token in ``?token=``, the ``tidings_token`` cookie or a bearer header."""
    return await _serve(request, native=True)


_PREFLIGHT = preflight("GET, POST, OPTIONS", "Authorization, Content-Type, Last-Event-ID")


def add_sse_routes(app: web.Application) -> None:
    """Registers both event-stream endpoints and their CORS preflights."""
    app.router.add_get("/connection/uni_sse", handle_uni_sse, allow_head=False)
    app.router.add_post("/connection/uni_sse", handle_uni_sse)
    app.router.add_get("/events", handle_events, allow_head=False)
    for path in ("/connection/uni_sse", "/events"):
        app.router.add_route(hdrs.METH_OPTIONS, path, _PREFLIGHT)
