"""A session's subscriptions: the ``subscribe``, ``unsubscribe`` and ``sub_refresh``
commands, the subscribe proxy's answer, the recovery read from the log, those the server
API makes and ends, and who gets join/leave.

A client-made subscription that asks to recover from a position its channel's history
window no longer reaches leaves as a :class:`~tidings.protocol.operations.RecoverCall`
(:mod:`tidings.recovery` reads the log); it is made when the call completes, with the
window's recovery from where the read stopped, in that one step.

Plain functions of a :class:`~tidings.protocol.core.SessionCore`, which a
:class:`~tidings.protocol.session.Session` calls; sans-I/O like it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from tidings.auth import SubscriptionClaims
from tidings.channels import (
    ChannelName,
    InvalidName,
    check_presence,
    check_subscribe,
    parse_channel,
    read_channel,
)
from tidings.codes import DisconnectCode, ErrorCode
from tidings.config import ChannelOptions
from tidings.errors import TokenError
from tidings.protocol import queries
from tidings.protocol.codec import raw
from tidings.protocol.messages import (
    Command,
    RecoverPosition,
    SubRefreshRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)
from tidings.protocol.operations import (
    Outcome,
    RecoverCall,
    Recovered,
    SubscribeCall,
    Subscribed,
)

if TYPE_CHECKING:
    from tidings.protocol.core import SessionCore
    from tidings.protocol.host import SubscribeOutcome

log = logging.getLogger("tidings.protocol.session")

#: Code of the ``unsubscribe`` push sent when the server ends a subscription; the SDK
#: treats codes below 2500 as final for that subscription.
SERVER_UNSUBSCRIBE = 2000

_TOO_MANY = "too many subscriptions (client.max_subscriptions)"


def subscribe_result(outcome: SubscribeOutcome) -> dict[str, Any]:
    """The ``subscribe`` result (or push) of a subscription the host added."""
    result: dict[str, Any] = {}
    if outcome.recoverable:
        result["recoverable"] = True
        result["positioned"] = True
        result["epoch"] = outcome.epoch
        result["offset"] = outcome.offset
    recovery = outcome.recovery
    if recovery is not None:
        result["was_recovering"] = True
        if recovery.recovered:
            result["recovered"] = True
            if recovery.publications:
                result["publications"] = [raw(p.pub) for p in recovery.publications]
    return result


def subscribe(
    session: SessionCore, command: Command, request: SubscribeRequest, now: float
) -> None:
    """The client's ``subscribe``: by a subscription token, the subscribe proxy, or the
    namespace's permissions."""
    channel = request.channel
    if channel in session.channels:
        session._error(command, ErrorCode.ALREADY_SUBSCRIBED)
        return
    if len(session.channels) >= session._settings.max_subscriptions:
        session._error(command, ErrorCode.LIMIT_EXCEEDED, _TOO_MANY)
        return
    try:
        name = read_channel(channel)
    except InvalidName as exc:
        # As Centrifugo answers a channel over its length limit: 107, not 102.
        session._error(command, ErrorCode.BAD_REQUEST, str(exc))
        return
    options = session._host.channel_options(name)
    if options is None:
        session._error(command, ErrorCode.UNKNOWN_CHANNEL)
        return
    if options.proxy_subscribe and not request.token:
        # The backend decides instead of the namespace's permissions; a subscription
        # token still decides by itself, as in Centrifugo.
        session._start(
            SubscribeCall(
                session._ticket(),
                session.client_id,
                session.user,
                session._meta,
                request,
                command.id,
            )
        )
        return
    sub_claims: SubscriptionClaims | None = None
    if request.token:
        try:
            sub_claims = session._host.verify_subscription(
                request.token, channel, session.user, session.client_id
            )
        except TokenError as exc:
            if exc.expired:
                session._error(command, ErrorCode.TOKEN_EXPIRED)
            else:
                log.info("subscription to %r refused: %s", channel, exc.reason)
                session._error(command, ErrorCode.PERMISSION_DENIED)
            return
    refused = (
        None
        if session._settings.insecure
        else check_subscribe(name, options, session.user, sub_claims is not None)
    )
    if refused is not None:
        session._error(command, refused)
        return
    _join(
        session,
        command,
        request,
        None if sub_claims is None else sub_claims.info,
        0 if sub_claims is None else sub_claims.expires_at,
        None,
        now,
    )


def _join(
    session: SessionCore,
    command: Command,
    request: SubscribeRequest,
    chan_info: bytes | None,
    expires_at: int,
    data: bytes | None,
    now: float,
) -> None:
    """Makes an allowed subscription and replies, or first reads its recovery from the log."""
    if request.recover and session._host.recovers_from_log(request.channel, request.position):
        session._start(
            RecoverCall(
                session._ticket(),
                session.client_id,
                session.user,
                session._meta,
                request,
                chan_info,
                expires_at,
                data,
                command.id,
            )
        )
        return
    result = enter(session, request, chan_info)
    _reply_joined(session, command, request.channel, result, expires_at, data, now)


def _reply_joined(
    session: SessionCore,
    command: Command,
    channel: str,
    result: dict[str, Any],
    expires_at: int,
    data: bytes | None,
    now: float,
) -> None:
    if expires_at:
        _expire_at(session, channel, expires_at, now, result)
    if data is not None:
        result["data"] = raw(data)
    session._reply(command, result)


def _expire_at(
    session: SessionCore, channel: str, expires_at: int, now: float, result: dict[str, Any]
) -> None:
    """Sets the subscription's expiry and tells the client its ttl in ``result``."""
    if session._sub_expiry is None:
        session._sub_expiry = {}
    session._sub_expiry[channel] = expires_at
    result["expires"] = True
    result["ttl"] = session._ttl(expires_at, now)


def subscribed(session: SessionCore, call: SubscribeCall, outcome: Outcome, now: float) -> None:
    """The subscribe proxy answered."""
    if not isinstance(outcome, Subscribed):
        log.info("subscription to %r refused by the backend: %r", call.request.channel, outcome)
        session._rejected(call.command_id, "subscribe", outcome)
        return
    command = Command(call.command_id, "subscribe")
    if _still_open(session, command, call.request.channel):
        _join(session, command, call.request, outcome.info, 0, outcome.data, now)


def recovered(session: SessionCore, call: RecoverCall, outcome: Outcome, now: float) -> None:
    """The log was read for the subscription's recovery: it is made now, recovered or
    not."""
    command = Command(call.command_id, "subscribe")
    request = call.request
    if not _still_open(session, command, request.channel):
        return
    read = outcome if isinstance(outcome, Recovered) else None
    result = enter(session, request, call.chan_info, read)
    _reply_joined(session, command, request.channel, result, call.expires_at, call.data, now)


def _still_open(session: SessionCore, command: Command, channel: str) -> bool:
    """Whether a subscription decided while an operation was out may still be made."""
    if channel in session.channels:
        # The server API subscribed it meanwhile.
        session._error(command, ErrorCode.ALREADY_SUBSCRIBED)
        return False
    if len(session.channels) >= session._settings.max_subscriptions:
        session._error(command, ErrorCode.LIMIT_EXCEEDED, _TOO_MANY)
        return False
    return True


def enter(
    session: SessionCore,
    request: SubscribeRequest,
    chan_info: bytes | None = None,
    read: Recovered | None = None,
) -> dict[str, Any]:
    """Adds an allowed subscription (with its channel info, when it has one); returns its
    result.

    Args:
        read: what the log gave of the recovery; the window then recovers from where that
            read stopped, and the two together are the recovery.
    """
    position: RecoverPosition | None = request.position if request.recover else None
    outcome = subscribe_after(session, request.channel, position, read)
    session.channels.add(request.channel)
    if chan_info is not None:
        if session.chan_info is None:
            session.chan_info = {}
        session.chan_info[request.channel] = chan_info
    name = parse_channel(request.channel)
    options = session._host.channel_options(name) if name is not None else None
    if name is not None and options is not None:
        push_join_leave = wants_join_leave(session, name, options, request.join_leave)
        track(session, request.channel, push_join_leave)
    return subscribe_result(outcome)


def subscribe_after(
    session: SessionCore,
    channel: str,
    position: RecoverPosition | None,
    read: Recovered | None,
) -> SubscribeOutcome:
    """Adds the host's subscription, recovering from ``position``; after a ``read`` from
    the log, the window recovers from where the read stopped and the two together are the
    recovery (call it in the step the read completed in)."""
    if read is None or position is None:
        return session._host.subscribe(session._subscriber, channel, position)
    since = RecoverPosition(read.position, position.epoch)
    outcome = session._host.subscribe(session._subscriber, channel, since)
    if outcome.recovery is None:
        return outcome
    name = parse_channel(channel)
    options = session._host.channel_options(name) if name is not None else None
    limit = options.recovery_max_publications if options is not None else 0
    recovery = outcome.recovery.after_log(read.publications, limit)
    return dataclasses.replace(outcome, recovery=recovery)


def unsubscribe(session: SessionCore, command: Command, request: UnsubscribeRequest) -> None:
    """The client's ``unsubscribe`` (of a channel the server did not subscribe it to)."""
    channel = request.channel
    if channel in session.channels and channel not in session.server_channels:
        session.channels.discard(channel)
        if session.chan_info:
            session.chan_info.pop(channel, None)
        session._host.unsubscribe(session._subscriber, channel)
        if session._sub_expiry:
            session._sub_expiry.pop(channel, None)
    # Unsubscribing from a channel one is not on is not an error: the SDK needs a reply.
    session._reply(command, {})


def sub_refresh(
    session: SessionCore, command: Command, request: SubRefreshRequest, now: float
) -> None:
    """The client's ``sub_refresh``: a new subscription token for a channel it is on."""
    channel = request.channel
    if channel not in session.channels:
        session._error(command, ErrorCode.PERMISSION_DENIED, "not subscribed")
        return
    try:
        claims = session._host.verify_subscription(
            request.token, channel, session.user, session.client_id
        )
    except TokenError as exc:
        log.info("sub_refresh of %r refused: %s", channel, exc.reason)
        if exc.expired:
            session._disconnect(DisconnectCode.SUBSCRIPTION_EXPIRED)
        else:
            session._error(command, ErrorCode.PERMISSION_DENIED)
        return
    result: dict[str, Any] = {}
    if session._sub_expiry is not None:
        session._sub_expiry.pop(channel, None)
    if claims.expires_at:
        _expire_at(session, channel, claims.expires_at, now, result)
    session._reply(command, result)


def server_subscribe(session: SessionCore, channel: str) -> bool:
    """Subscribes a connected session on the server's initiative and pushes ``subscribe``
    to the client; False when the channel or the limit does not allow it."""
    if channel in session.channels:
        return False
    name = parse_channel(channel)
    if name is None or session._host.channel_options(name) is None:
        return False
    if len(session.channels) >= session._settings.max_subscriptions:
        log.info("server subscribe of %r to %r: at max_subscriptions", session.user, channel)
        return False
    outcome = session._host.subscribe(session._subscriber, channel, None)
    session.channels.add(channel)
    track(session, channel, forced_join_leave(session, name))
    session.server_channels = session.server_channels | {channel}
    session._push({"channel": channel, "subscribe": subscribe_result(outcome)})
    return True


def server_unsubscribe(session: SessionCore, channel: str) -> bool:
    """Ends a subscription of a connected session on the server's initiative and pushes
    ``unsubscribe`` (code 2000) to the client; False when it was not subscribed."""
    if channel not in session.channels:
        return False
    session.channels.discard(channel)
    if session.chan_info:
        session.chan_info.pop(channel, None)
    session.server_channels = session.server_channels - {channel}
    session._host.unsubscribe(session._subscriber, channel)
    if session._sub_expiry:
        session._sub_expiry.pop(channel, None)
    session._push(
        {"channel": channel, "unsubscribe": {"code": SERVER_UNSUBSCRIBE, "reason": "server"}}
    )
    return True


def forced_join_leave(session: SessionCore, name: ChannelName) -> bool:
    """Whether a server-side subscription gets join/leave: only when forced."""
    options = session._host.channel_options(name)
    return options is not None and options.force_push_join_leave


def wants_join_leave(
    session: SessionCore, name: ChannelName, options: ChannelOptions, asked: bool
) -> bool:
    """Centrifugo's rule: every subscriber gets join/leave with ``force_push_join_leave``;
    otherwise one who asked, where ``join_leave`` is on and presence is open to it."""
    if options.force_push_join_leave:
        return True
    return (
        asked and options.join_leave and queries.may(session, check_presence, name, options, True)
    )


def track(session: SessionCore, channel: str, push_join_leave: bool) -> None:
    """Enters a new subscription into presence (and join/leave, with ``push_join_leave``)."""
    info = session.client_info_on(channel)
    session._host.track(session._subscriber, channel, info, push_join_leave)
