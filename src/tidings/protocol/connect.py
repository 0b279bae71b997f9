"""How a session becomes a connection and keeps it: the ``connect`` command (a token, the
connect proxy or an anonymous client), admission by the node, the server-side
subscriptions of the claims, and the connection's expiry (``refresh`` and the refresh
proxy).

Plain functions of a :class:`~tidings.protocol.core.SessionCore`, which a
:class:`~tidings.protocol.session.Session` calls; sans-I/O like it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tidings import __version__
from tidings.auth import ConnectionClaims
from tidings.channels import parse_channel
from tidings.codes import DisconnectCode, ErrorCode
from tidings.errors import TokenError
from tidings.protocol import codec, subscribing
from tidings.protocol.codec import raw
from tidings.protocol.messages import Command, ConnectRequest, RefreshRequest
from tidings.protocol.operations import (
    ConnectCall,
    Connected,
    ConnectRecoverCall,
    Disconnected,
    NotRecovered,
    Outcome,
    Recovered,
    RecoveredChannels,
    RefreshCall,
    Refreshed,
    Rejected,
)

if TYPE_CHECKING:
    from tidings.protocol.core import SessionCore

log = logging.getLogger("tidings.protocol.session")

_ADMIT_REASONS = {
    DisconnectCode.CONNECTION_LIMIT: "connection limit reached "
    "(client.max_connections_per_user or client.max_connections)",
}


def connect(
    session: SessionCore, request: ConnectRequest, now: float, command: Command | None = None
) -> dict[str, Any] | None:
    """Authenticates a connect request; returns the connect result, or None when a close,
    an error reply or a connect proxy call was produced instead."""
    if request.token:
        try:
            claims = session._host.authenticate(request.token)
        except TokenError as exc:
            if exc.expired and command is not None:
                session._error(command, ErrorCode.TOKEN_EXPIRED)
                return None
            log.info("connection refused: %s", exc.reason)
            if exc.expired and session._bidirectional:
                session._disconnect(DisconnectCode.EXPIRED)
            else:
                # A push-only client would reconnect with the same token forever:
                # an expired one is as final for it as an invalid one.
                session._disconnect(DisconnectCode.INVALID_TOKEN, exc.reason)
            return None
    elif session._host.proxies("connect"):
        # Centrifugo names the client before asking the backend, which may log it.
        session.client_id = str(uuid.uuid4())
        command_id = command.id if command is not None else 0
        session._start(
            ConnectCall(session._ticket(), session.client_id, "", None, request, command_id)
        )
        return None
    elif session._settings.insecure or session._host.anonymous_allowed():
        claims = ConnectionClaims("", 0, (), None)
    else:
        log.info("connection refused: no token")
        session._disconnect(DisconnectCode.INVALID_TOKEN)
        return None
    return accept(session, claims, request, now, command_id=command.id if command else 0)


def accept(
    session: SessionCore,
    claims: ConnectionClaims,
    request: ConnectRequest,
    now: float,
    sub_data: Mapping[str, bytes] | None = None,
    data: bytes | None = None,
    command_id: int = 0,
) -> dict[str, Any] | None:
    """Admits an authenticated connection and makes its server-side subscriptions;
    returns the connect result, or None after closing (limits) or when the subscriptions
    first read what they missed from the log (a :class:`ConnectRecoverCall`, whose
    completion sends the reply)."""
    session.user = claims.user
    session.info = claims.info
    session._expires_at = claims.expires_at
    session.client_id = session.client_id or str(uuid.uuid4())
    refused = session._admit()
    if refused is not None:
        session.client_id = ""
        session._disconnect(refused, _ADMIT_REASONS.get(refused, ""))
        return None
    session._established(now)
    since = _log_reads(session, claims, request)
    if since:
        session._start(
            ConnectRecoverCall(
                session._ticket(),
                session.client_id,
                session.user,
                session._meta,
                claims.channels,
                request,
                since,
                sub_data,
                data,
                command_id,
            )
        )
        return None
    return _joined(session, claims.channels, request, now, sub_data, data, {})


def _log_reads(
    session: SessionCore, claims: ConnectionClaims, request: ConnectRequest
) -> dict[str, int]:
    """The server-side channels whose positions in ``subs`` the windows no longer reach
    and the log can give: channel -> offset."""
    since: dict[str, int] = {}
    for channel in dict.fromkeys(claims.channels):
        position = request.subs.get(channel)
        if position is not None and session._host.recovers_from_log(channel, position):
            since[channel] = position.offset
    return since


def recovered(session: SessionCore, call: ConnectRecoverCall, outcome: Outcome, now: float) -> None:
    """The log was read for the connection's server-side subscriptions: they are made now,
    recovered or not, and the connect reply sent."""
    found = outcome.found if isinstance(outcome, RecoveredChannels) else {}
    result = _joined(session, call.channels, call.request, now, call.sub_data, call.data, found)
    if result is not None:
        _send(session, call.command_id, result)


def _joined(
    session: SessionCore,
    channels: Sequence[str],
    request: ConnectRequest,
    now: float,
    sub_data: Mapping[str, bytes] | None,
    data: bytes | None,
    found: Mapping[str, Recovered | NotRecovered],
) -> dict[str, Any] | None:
    """Makes the server-side subscriptions (those in ``found`` from where the log's read
    stopped) and returns the connect result; None after closing (limits)."""
    settings = session._settings
    subs: dict[str, Any] = {}
    server_channels = []
    for channel in channels:
        name = parse_channel(channel)
        if name is None or session._host.channel_options(name) is None:
            log.warning("token of user %r names unknown channel %r", session.user, channel)
            continue
        if channel in session.channels:
            continue  # named twice
        if len(session.channels) >= settings.max_subscriptions:
            session._disconnect(DisconnectCode.CHANNEL_LIMIT, "client.max_subscriptions reached")
            return None
        read = found.get(channel)
        position = request.subs.get(channel)
        outcome = subscribing.subscribe_after(
            session, channel, position, read if isinstance(read, Recovered) else None
        )
        session.channels.add(channel)
        subscribing.track(session, channel, subscribing.forced_join_leave(session, name))
        server_channels.append(channel)
        subs[channel] = subscribing.subscribe_result(outcome)
        if sub_data and channel in sub_data:
            subs[channel]["data"] = raw(sub_data[channel])
    session.server_channels = frozenset(server_channels)
    result: dict[str, Any] = {
        "client": session.client_id,
        "version": __version__,
        "ping": int(settings.ping_interval),
    }
    if session._bidirectional:
        result["pong"] = True
    if session._emulation is not None:
        result["session"] = session._emulation.session
        result["node"] = session._emulation.node
    if subs:
        result["subs"] = subs
    if session._expires_at and not session._server_refresh:
        # With the refresh proxy the server extends the connection; the client has no
        # token to send.
        result["expires"] = True
        result["ttl"] = session._ttl(session._expires_at, now)
    if data is not None:
        result["data"] = raw(data)
    return result


def _send(session: SessionCore, command_id: int, result: dict[str, Any]) -> None:
    """The connect reply of a connection accepted after an operation."""
    if session._bidirectional:
        if command_id:
            session._output.append(codec.encode_reply(command_id, "connect", result))
    else:
        session._output.append(codec.encode({"connect": result}))


def connected(session: SessionCore, call: ConnectCall, outcome: Outcome, now: float) -> None:
    """The connect proxy answered."""
    if not isinstance(outcome, Connected):
        log.info("connection refused by the backend: %r", outcome)
        if session._bidirectional or isinstance(outcome, Disconnected):
            session._rejected(call.command_id, "connect", outcome)
        elif isinstance(outcome, Rejected) and outcome.temporary:
            session._disconnect(DisconnectCode.INTERNAL_ERROR, outcome.message)
        else:
            # A push-only client has no error reply to read: its refusal is a close.
            message = outcome.message if isinstance(outcome, Rejected) else ""
            session._disconnect(DisconnectCode.PERMISSION_DENIED, message)
        return
    if outcome.expire_at and outcome.expire_at <= now + session._wall_offset:
        log.info("connect proxy gave user %r an expire_at in the past", outcome.user)
        session._disconnect(DisconnectCode.EXPIRED)
        return
    session._server_refresh = True
    session._meta = outcome.meta
    claims = ConnectionClaims(outcome.user, outcome.expire_at, outcome.channels, outcome.info)
    sub_data = dict(outcome.sub_data)
    result = accept(session, claims, call.request, now, sub_data, outcome.data, call.command_id)
    if result is not None:
        _send(session, call.command_id, result)


def expire(session: SessionCore, wall: float) -> bool:
    """The connection's expiry, at Unix time ``wall``: asks the refresh proxy for more time
    once it is reached (under the proxy's word), else closes it ``expired_close_delay``
    late (under a token's). Returns whether the session closed."""
    settings = session._settings
    if session._server_refresh:
        if session._expires_at and not session._refreshing and wall >= session._expires_at:
            if not session._host.proxies("refresh"):
                session._disconnect(DisconnectCode.EXPIRED)
                return True
            session._refreshing = True
            session._start(
                RefreshCall(session._ticket(), session.client_id, session.user, session._meta)
            )
    elif session._expires_at and wall >= session._expires_at + settings.expired_close_delay:
        session._disconnect(DisconnectCode.EXPIRED)
        return True
    return False


def refresh(session: SessionCore, command: Command, request: RefreshRequest, now: float) -> None:
    """The client's ``refresh``: a new connection token, of the same user."""
    try:
        claims = session._host.authenticate(request.token)
    except TokenError as exc:
        log.info("refresh refused for user %r: %s", session.user, exc.reason)
        session._disconnect(DisconnectCode.EXPIRED if exc.expired else DisconnectCode.INVALID_TOKEN)
        return
    if claims.user != session.user:
        log.info(
            "refresh refused: token of user %r on a connection of %r", claims.user, session.user
        )
        session._disconnect(DisconnectCode.INVALID_TOKEN)
        return
    session._expires_at = claims.expires_at
    result: dict[str, Any] = {}
    if claims.expires_at:
        result["expires"] = True
        result["ttl"] = session._ttl(claims.expires_at, now)
    session._reply(command, result)


def refreshed(session: SessionCore, outcome: Outcome, now: float) -> None:
    """The refresh proxy answered (the host turns its own failures into a retry time)."""
    session._refreshing = False
    if isinstance(outcome, Disconnected):
        session._disconnect(outcome.code, outcome.reason)
        return
    wall = now + session._wall_offset
    if (
        not isinstance(outcome, Refreshed)
        or outcome.expired
        or (outcome.expire_at and outcome.expire_at <= wall)
    ):
        log.info("connection of user %r expired (refresh proxy: %r)", session.user, outcome)
        session._disconnect(DisconnectCode.EXPIRED)
        return
    session._expires_at = outcome.expire_at
    if outcome.info is not None:
        session.info = outcome.info
