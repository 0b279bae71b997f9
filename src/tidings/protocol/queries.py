"""A session's read-only commands, ``history``, ``presence`` and ``presence_stats``, and
the rules of who may read (or, for publish, write) a channel it may not be subscribed to.

Plain functions of a :class:`~tidings.protocol.core.SessionCore`, which a
:class:`~tidings.protocol.session.Session` calls; sans-I/O like it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidings.channels import ChannelName, InvalidName, check_presence, check_subscribe, read_channel
from tidings.codes import ErrorCode
from tidings.config import ChannelOptions
from tidings.protocol.codec import raw
from tidings.protocol.messages import (
    Command,
    HistoryRequest,
    PresenceRequest,
    PresenceStatsRequest,
)

if TYPE_CHECKING:
    from tidings.protocol.core import SessionCore


def command_channel(
    session: SessionCore, command: Command, channel: str
) -> tuple[ChannelName, ChannelOptions] | None:
    """The parsed channel of a command and its options, or None after answering 107 (an
    invalid name) or 102 (an unknown namespace), as subscribe does."""
    try:
        name = read_channel(channel)
    except InvalidName as exc:
        session._error(command, ErrorCode.BAD_REQUEST, str(exc))
        return None
    options = session._host.channel_options(name)
    if options is None:
        session._error(command, ErrorCode.UNKNOWN_CHANNEL)
        return None
    return name, options


def may(
    session: SessionCore, check: Any, name: ChannelName, options: ChannelOptions, subscribed: bool
) -> bool:
    """Whether ``check`` (publish or presence) lets this client act on ``name``. The
    ``*_for_client`` options cover only channels the client could subscribe to by
    itself, as ``allow_history_for_client`` does: never a private channel or another
    user's. Insecure mode allows everything."""
    if session._settings.insecure:
        return True
    could_subscribe = check_subscribe(name, options, session.user, has_valid_token=False) is None
    return bool(check(options, session.user, subscribed, could_subscribe) is None)


def history(session: SessionCore, command: Command, request: HistoryRequest) -> None:
    """The client's ``history``: a page of the channel's publications."""
    channel = request.channel
    found = command_channel(session, command, channel)
    if found is None:
        return
    name, options = found
    if options.history_size <= 0 or options.history_ttl <= 0:
        session._error(command, ErrorCode.NOT_AVAILABLE, "history is off for this channel")
        return
    if not _may_read_history(session, name, options):
        session._error(command, ErrorCode.PERMISSION_DENIED)
        return
    if request.reverse and request.since is not None and request.since.offset == 0:
        session._error(command, ErrorCode.BAD_REQUEST, "reverse since offset 0 reads nothing")
        return
    most = session._settings.history_max_limit
    limit = most if request.limit < 0 or request.limit > most else request.limit
    page = session._host.read_history(channel, limit, request.since, request.reverse)
    if page is None:
        session._error(command, ErrorCode.UNRECOVERABLE_POSITION)
        return
    result: dict[str, Any] = {"epoch": page.epoch, "offset": page.offset}
    if page.publications:
        result["publications"] = [raw(p.pub) for p in page.publications]
    session._reply(command, result)


def _may_read_history(session: SessionCore, name: ChannelName, options: ChannelOptions) -> bool:
    """``allow_history_for_subscriber``: subscribed here; ``allow_history_for_client``:
    any channel this client could subscribe to by itself (never a private or another
    user's channel, which would leak what a subscription refuses)."""
    if session._settings.insecure:
        return True
    if options.allow_history_for_subscriber and name.name in session.channels:
        return True
    return options.allow_history_for_client and (
        check_subscribe(name, options, session.user, has_valid_token=False) is None
    )


def presence(
    session: SessionCore, command: Command, request: PresenceRequest | PresenceStatsRequest
) -> None:
    """The client's ``presence`` (who is subscribed) or ``presence_stats`` (how many)."""
    channel = request.channel
    found = command_channel(session, command, channel)
    if found is None:
        return
    name, options = found
    if not options.presence:
        session._error(command, ErrorCode.NOT_AVAILABLE, "presence is off in this namespace")
        return
    if not may(session, check_presence, name, options, channel in session.channels):
        session._error(command, ErrorCode.PERMISSION_DENIED)
        return
    members = session._host.presence(channel)
    if isinstance(request, PresenceStatsRequest):
        users = {info.user for info in members.values()}
        session._reply(command, {"num_clients": len(members), "num_users": len(users)})
    else:
        session._reply(
            command, {"presence": {cid: info.to_obj() for cid, info in members.items()}}
        )
