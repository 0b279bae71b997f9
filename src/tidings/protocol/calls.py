"""A session's operations (:mod:`tidings.protocol.operations`) coming back: where each
outcome goes, and the commands answered only once one ends, ``rpc`` and ``publish``.

Plain functions of a :class:`~tidings.protocol.core.SessionCore`, which a
:class:`~tidings.protocol.session.Session` calls; sans-I/O like it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tidings.channels import NameKind, check_publish, name_problem
from tidings.codes import ErrorCode
from tidings.protocol import connect, queries, subscribing
from tidings.protocol.codec import raw
from tidings.protocol.messages import Command, PublishRequest, RpcRequest
from tidings.protocol.operations import (
    Answered,
    Approved,
    ConnectCall,
    ConnectRecoverCall,
    NodeRpcCall,
    Operation,
    Outcome,
    ProxyPublishCall,
    PublishCall,
    Published,
    RecoverCall,
    RpcCall,
    SubscribeCall,
)

if TYPE_CHECKING:
    from tidings.protocol.core import SessionCore

log = logging.getLogger("tidings.protocol.session")

#: Operations of one connection that let later commands pass (rpc, publish) and may be out
#: at once; more are answered 111, so a client cannot pile up backend calls or appends to
#: the log faster than they end.
MAX_OPERATIONS_IN_FLIGHT = 100

_IN_FLIGHT = "too many calls in flight"

#: RPC methods that the node answers itself (``tidings.push.subscribe``, …), whatever the
#: RPC proxy's settings: they never reach the application's backend.
NODE_METHOD_PREFIX = "tidings."


def finish(session: SessionCore, operation: Operation, outcome: Outcome, now: float) -> None:
    """Produces the reply (or close) of an operation the host performed."""
    if isinstance(operation, ConnectCall):
        connect.connected(session, operation, outcome, now)
    elif isinstance(operation, ConnectRecoverCall):
        connect.recovered(session, operation, outcome, now)
    elif isinstance(operation, SubscribeCall):
        subscribing.subscribed(session, operation, outcome, now)
    elif isinstance(operation, RecoverCall):
        subscribing.recovered(session, operation, outcome, now)
    elif isinstance(operation, RpcCall | NodeRpcCall):
        _answered(session, operation, outcome)
    elif isinstance(operation, PublishCall):
        _published(session, operation, outcome)
    elif isinstance(operation, ProxyPublishCall):
        _approved(session, operation, outcome)
    else:
        connect.refreshed(session, outcome, now)


def rpc(session: SessionCore, command: Command, request: RpcRequest) -> None:
    """The client's ``rpc``: a method of the node's own (:data:`NODE_METHOD_PREFIX`) or a
    call to the backend's RPC proxy."""
    problem = name_problem(request.method, NameKind.METHOD)
    if problem is not None:
        session._error(command, ErrorCode.BAD_REQUEST, problem)
        return
    own = request.method.startswith(NODE_METHOD_PREFIX)
    if not own and not session._host.proxies("rpc", request.method):
        session._error(command, ErrorCode.METHOD_NOT_FOUND)
        return
    if session.pending >= MAX_OPERATIONS_IN_FLIGHT:
        session._error(command, ErrorCode.TOO_MANY_REQUESTS, _IN_FLIGHT)
        return
    ticket, client, user, meta = session._ticket(), session.client_id, session.user, session._meta
    if own:
        reads = frozenset(session.channels)
        call = NodeRpcCall(
            ticket, client, user, meta, request.method, request.data, command.id, reads
        )
        session._start(call)
    else:
        session._start(
            RpcCall(ticket, client, user, meta, request.method, request.data, command.id)
        )


def _answered(session: SessionCore, call: RpcCall | NodeRpcCall, outcome: Outcome) -> None:
    """The RPC proxy (or the node, for its own methods) answered."""
    if not isinstance(outcome, Answered):
        session._rejected(call.command_id, "rpc", outcome)
        return
    result: dict[str, Any] = {}
    if outcome.data is not None:
        result["data"] = raw(outcome.data)
    session._reply(Command(call.command_id, "rpc"), result)


def publish(session: SessionCore, command: Command, request: PublishRequest) -> None:
    """The client's ``publish``: an allowed publication leaves as an operation, and the
    reply waits for the log."""
    channel = request.channel
    found = queries.command_channel(session, command, channel)
    if found is None:
        return
    name, options = found
    if not options.proxy_publish and not queries.may(
        session, check_publish, name, options, channel in session.channels
    ):
        log.info("publish of user %r to %r refused", session.user, channel)
        session._error(command, ErrorCode.PERMISSION_DENIED)
        return
    if session.pending >= MAX_OPERATIONS_IN_FLIGHT:
        session._error(command, ErrorCode.TOO_MANY_REQUESTS, _IN_FLIGHT)
        return
    if options.proxy_publish:
        # The backend decides instead of the namespace's allow_publish_* options.
        session._start(
            ProxyPublishCall(
                session._ticket(),
                session.client_id,
                session.user,
                session._meta,
                channel,
                request.data,
                session.info,
                command.id,
            )
        )
        return
    _append(session, command.id, channel, request.data)


def _append(session: SessionCore, command_id: int, channel: str, data: bytes) -> None:
    """An allowed publication leaves for the log."""
    info = session.client_info_on(channel).to_json()
    session._start(
        PublishCall(
            session._ticket(),
            session.client_id,
            session.user,
            session._meta,
            channel,
            data,
            info,
            command_id,
        )
    )


def _approved(session: SessionCore, call: ProxyPublishCall, outcome: Outcome) -> None:
    """The publish proxy answered: an approved publication goes on to the log, with the
    data the backend gave in place of the client's."""
    if not isinstance(outcome, Approved):
        log.info("publish of user %r to %r refused by the backend", session.user, call.channel)
        session._rejected(call.command_id, "publish", outcome)
        return
    data = outcome.data if outcome.data is not None else call.data
    _append(session, call.command_id, call.channel, data)


def _published(session: SessionCore, call: PublishCall, outcome: Outcome) -> None:
    """The log took the publication (or refused it)."""
    if not isinstance(outcome, Published):
        session._rejected(call.command_id, "publish", outcome)
        return
    session._reply(Command(call.command_id, "publish"), {})
