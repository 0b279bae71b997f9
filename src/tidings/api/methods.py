"""The server API's methods: each request's checks, what it does, its result or error.

The methods, their requests and their results follow Centrifugo's HTTP API, so that its
clients (the ``cent`` package among them) work unchanged: a method's answer is
``{"result": {...}}`` or ``{"error": {"code", "message"}}``, and ``batch`` takes
``{"commands": [{"publish": {...}}, ...]}`` and answers ``{"replies": [{"publish": {...}} |
{"error": {...}}, ...]}``. Error codes are the client protocol's
(:class:`~tidings.codes.ErrorCode`): 100 internal (the log is down), 102 unknown channel,
104 method not found, 106 limit exceeded, 107 bad request, 108 not available, 112
unrecoverable position.

Methods that act on connections (``subscribe``, ``unsubscribe``, ``disconnect``,
``refresh``) and ``history_remove`` travel through the log as signed server commands
(:mod:`tidings.commands`), so every worker and node applies them. ``channels`` and
``info`` describe the node (worker process) that answers.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tidings.channels import InvalidName, read_channel
from tidings.codes import DisconnectCode, ErrorCode
from tidings.commands import ServerCommand
from tidings.config import ChannelOptions
from tidings.node import Node, PublishError
from tidings.protocol import codec
from tidings.protocol.messages import HistoryRequest

__all__ = ["METHODS", "ApiError", "batch", "call"]

# The name it had before the API became a package.
log = logging.getLogger("tidings.api")
#: Most commands in one batch.
_MAX_BATCH = 1000


class ApiError(Exception):
    """A method's error answer: ``{"error": {"code": code, "message": message}}``."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message

    def as_json(self) -> dict[str, Any]:
        """The ``error`` object."""
        return {"code": int(self.code), "message": self.message}


Method = Callable[[Node, dict[str, Any]], Awaitable[dict[str, Any]]]


# ---------------------------------------------------------------------- request fields
def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = body.get(name)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ApiError(ErrorCode.BAD_REQUEST, f"field '{name}' must be a string")
    if required and not value:
        raise ApiError(ErrorCode.BAD_REQUEST, f"field '{name}' is required")
    return value


def _int(body: dict[str, Any], name: str) -> int:
    value = body.get(name) or 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ApiError(ErrorCode.BAD_REQUEST, f"field '{name}' must be a non-negative integer")
    return value


def _channel(node: Node, name: str) -> ChannelOptions:
    """The options of channel ``name``: 107 when it is not a channel name, 102 when its
    namespace is unknown."""
    try:
        parsed = read_channel(name)
    except InvalidName as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, f"invalid channel: {exc}") from None
    options = node.channel_options(parsed)
    if options is None:
        raise ApiError(ErrorCode.UNKNOWN_CHANNEL, f"unknown namespace of channel {name!r}")
    return options


def _unsupported(body: dict[str, Any], *names: str) -> None:
    """Answers 108 for request options of Centrifugo's that tidings does not implement:
    ignoring them would silently break what the caller relies on."""
    for name in names:
        if body.get(name):
            raise ApiError(ErrorCode.NOT_AVAILABLE, f"option '{name}' is not supported")


def _data(body: dict[str, Any]) -> Any:
    """The publication's payload: ``data``, or ``b64data`` holding base64 of JSON."""
    encoded = body.get("b64data")
    if encoded:
        if not isinstance(encoded, str):
            raise ApiError(ErrorCode.BAD_REQUEST, "field 'b64data' must be a string")
        try:
            return orjson.loads(base64.b64decode(encoded, validate=True))
        except (binascii.Error, orjson.JSONDecodeError):
            raise ApiError(
                ErrorCode.BAD_REQUEST, "field 'b64data' must be base64 of a JSON value"
            ) from None
    if "data" not in body:
        raise ApiError(ErrorCode.BAD_REQUEST, "field 'data' is required")
    return body["data"]


def _history_off(options: ChannelOptions) -> bool:
    return options.history_size <= 0 or options.history_ttl <= 0


# ---------------------------------------------------------------------- publishing
async def _publish(node: Node, channels: list[str], data: Any) -> None:
    try:
        await node.publish(channels, data)
    except PublishError as exc:
        raise ApiError(ErrorCode.LIMIT_EXCEEDED, str(exc)) from None
    except Exception as exc:  # the log is down: tell the caller, do not pretend
        log.warning("publish failed: %s", exc)
        raise ApiError(ErrorCode.INTERNAL, f"publish failed: {exc}") from None


_PUBLISH_OPTIONS = ("skip_history", "tags", "idempotency_key", "delta", "version")


async def publish(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Publishes ``data`` to ``channel`` through the log."""
    channel = _string(body, "channel", required=True)
    _channel(node, channel)
    _unsupported(body, *_PUBLISH_OPTIONS)
    await _publish(node, [channel], _data(body))
    return {}


async def broadcast(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Publishes ``data`` to several ``channels``: one event, one position; a channel that
    is refused gets its own error in ``responses`` and the others are still published."""
    channels = body.get("channels")
    if not isinstance(channels, list) or not channels:
        raise ApiError(ErrorCode.BAD_REQUEST, "field 'channels' must be a non-empty list")
    _unsupported(body, *_PUBLISH_OPTIONS)
    data = _data(body)
    responses: list[dict[str, Any]] = []
    valid: list[str] = []
    for channel in channels:
        try:
            if not isinstance(channel, str) or not channel:
                raise ApiError(ErrorCode.BAD_REQUEST, "a channel must be a non-empty string")
            _channel(node, channel)
        except ApiError as exc:
            responses.append({"error": exc.as_json()})
            continue
        valid.append(channel)
        responses.append({"result": {}})
    if valid:
        await _publish(node, valid, data)
    return {"responses": responses}


# ---------------------------------------------------------------------- connections
def _user(body: dict[str, Any]) -> str:
    return _string(body, "user", required=True)


async def subscribe(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Subscribes the connections of ``user`` (or its connection ``client``) to
    ``channel``, on every node, as a server-side subscription."""
    user = _user(body)
    channel = _string(body, "channel", required=True)
    _channel(node, channel)
    _unsupported(body, "info", "b64info", "data", "b64data", "recover_since", "override", "session")
    await _command(node, "subscribe", user=user, channel=channel, client=_string(body, "client"))
    return {}


async def unsubscribe(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Ends the subscription of ``user``'s connections (or of ``client``) to ``channel``."""
    user = _user(body)
    channel = _string(body, "channel", required=True)
    _channel(node, channel)
    _unsupported(body, "session")
    await _command(node, "unsubscribe", user=user, channel=channel, client=_string(body, "client"))
    return {}


async def disconnect(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Closes ``user``'s connections (or ``client``, sparing ``whitelist``) with 3503 or the
    given ``disconnect.code`` and ``disconnect.reason``."""
    user = _user(body)
    _unsupported(body, "session")
    whitelist = body.get("whitelist") or []
    if not isinstance(whitelist, list) or not all(isinstance(c, str) for c in whitelist):
        raise ApiError(ErrorCode.BAD_REQUEST, "field 'whitelist' must be a list of strings")
    custom = body.get("disconnect") or {}
    if not isinstance(custom, dict):
        raise ApiError(ErrorCode.BAD_REQUEST, "field 'disconnect' must be an object")
    code = _int(custom, "code")
    if code and code not in DisconnectCode.__members__.values():
        raise ApiError(
            ErrorCode.BAD_REQUEST,
            "disconnect.code must be one of tidings' close codes (3000-3013, 3500-3509)",
        )
    reason = _string(custom, "reason")
    if len(reason.encode()) > 120 or _is_json(reason):
        # The SDK reads a JSON close reason as reconnect advice; a long one is cut.
        raise ApiError(
            ErrorCode.BAD_REQUEST, "disconnect.reason must be plain text of at most 120 bytes"
        )
    await _command(
        node,
        "disconnect",
        user=user,
        client=_string(body, "client"),
        whitelist=tuple(whitelist),
        code=code,
        reason=reason,
    )
    return {}


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


async def refresh(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Sets the expiry of ``user``'s connections (or ``client``): ``expired`` closes them
    with 3005, else ``expire_at`` (Unix time, 0 for never) replaces their token's."""
    user = _user(body)
    _unsupported(body, "info", "session")
    expired = body.get("expired", False)
    if not isinstance(expired, bool):
        raise ApiError(ErrorCode.BAD_REQUEST, "field 'expired' must be true or false")
    await _command(
        node,
        "refresh",
        user=user,
        client=_string(body, "client"),
        expired=expired,
        expire_at=_int(body, "expire_at"),
    )
    return {}


async def _command(node: Node, kind: str, **fields: Any) -> None:
    try:
        await node.send_command(ServerCommand(kind, node.clock(), **fields))
    except Exception as exc:  # the log is down
        log.warning("server command %s failed: %s", kind, exc)
        raise ApiError(ErrorCode.INTERNAL, f"{kind} failed: {exc}") from None


# ---------------------------------------------------------------------- presence
def _presence_channel(node: Node, body: dict[str, Any]) -> str:
    """The ``channel`` of a presence request: 107/102 as :func:`_channel`, 108 when its
    namespace keeps no presence."""
    channel = _string(body, "channel", required=True)
    if not _channel(node, channel).presence:
        raise ApiError(ErrorCode.NOT_AVAILABLE, "presence is off in this namespace")
    return channel


async def presence(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Who is subscribed to ``channel`` anywhere in the cluster: ``{"presence": {client_id:
    {"user", "client", "conn_info"?, "chan_info"?}}}``, from the node's cluster view."""
    members = node.presence(_presence_channel(node, body))
    return {"presence": {cid: info.to_obj() for cid, info in members.items()}}


async def presence_stats(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """How many clients and distinct users are subscribed to ``channel`` in the cluster."""
    clients, users = node.presence_stats(_presence_channel(node, body))
    return {"num_clients": clients, "num_users": users}


# ---------------------------------------------------------------------- history
async def history(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """A page of ``channel``'s history: ``limit`` (0 the position only, -1 all that is
    held), ``since`` ``{offset, epoch}`` and ``reverse`` as the client command has them."""
    command = codec.decode_command({"history": body})
    if command.error:
        raise ApiError(ErrorCode.BAD_REQUEST, command.error)
    request = command.request
    assert isinstance(request, HistoryRequest)
    if _history_off(_channel(node, request.channel)):
        raise ApiError(ErrorCode.NOT_AVAILABLE, "history is off for this channel")
    if request.reverse and request.since is not None and request.since.offset == 0:
        raise ApiError(ErrorCode.BAD_REQUEST, "reverse since offset 0 reads nothing")
    page = node.read_history(request.channel, request.limit, request.since, request.reverse)
    if page is None:
        raise ApiError(ErrorCode.UNRECOVERABLE_POSITION)
    return {
        "publications": [codec.raw(p.pub) for p in page.publications],
        "epoch": page.epoch,
        "offset": page.offset,
    }


async def history_remove(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Forgets ``channel``'s history on every node (recoveries from before it fail)."""
    channel = _string(body, "channel", required=True)
    if _history_off(_channel(node, channel)):
        raise ApiError(ErrorCode.NOT_AVAILABLE, "history is off for this channel")
    await _command(node, "history_remove", channel=channel)
    return {}


# ---------------------------------------------------------------------- read receipts
async def unread(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """How many publications of ``channel`` that this node holds (its history window)
    ``user`` has not marked seen: ``{"unread": n, "exact": bool}`` (see
    :mod:`tidings.receipts`)."""
    user = _user(body)
    channel = _string(body, "channel", required=True)
    if _history_off(_channel(node, channel)):
        raise ApiError(ErrorCode.NOT_AVAILABLE, "history is off for this channel")
    count = node.receipts.unread(user, channel)
    return {"unread": count.count, "exact": count.exact}


# ---------------------------------------------------------------------- this node
async def channels(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Channels with subscribers on this node, filtered by a shell-style ``pattern``."""
    pattern = _string(body, "pattern")
    hub = node.hub
    return {
        "channels": {
            name: {"num_clients": hub.subscribers(name)}
            for name in hub.channels()
            if not pattern or fnmatch.fnmatchcase(name, pattern)
        }
    }


async def info_method(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """Every live worker of the cluster: ``{"nodes": [...]}`` in Centrifugo's shape, this
    worker first, the others as their last heartbeat described them."""
    return {"nodes": node.cluster_nodes()}


METHODS: dict[str, Method] = {
    "publish": publish,
    "broadcast": broadcast,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "disconnect": disconnect,
    "refresh": refresh,
    "presence": presence,
    "presence_stats": presence_stats,
    "history": history,
    "history_remove": history_remove,
    "unread": unread,
    "channels": channels,
    "info": info_method,
}


async def call(node: Node, method: str, body: object) -> dict[str, Any]:
    """Runs one method; returns ``{"result": ...}`` or ``{"error": ...}``."""
    handler = METHODS.get(method)
    try:
        if handler is None:
            raise ApiError(ErrorCode.METHOD_NOT_FOUND, f"method {method[:50]!r} not found")
        if not isinstance(body, dict):
            raise ApiError(ErrorCode.BAD_REQUEST, f"the {method} request must be an object")
        return {"result": await handler(node, body)}
    except ApiError as exc:
        return {"error": exc.as_json()}


async def batch(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """``{"commands": [{"<method>": {...}}, ...]}``, run in order; one reply per command:
    ``{"<method>": result}`` or ``{"error": ...}``."""
    commands = body.get("commands")
    if not isinstance(commands, list) or len(commands) > _MAX_BATCH:
        error = ApiError(
            ErrorCode.BAD_REQUEST, f"field 'commands' must be a list of at most {_MAX_BATCH}"
        )
        return {"error": error.as_json()}
    replies: list[dict[str, Any]] = []
    for command in commands:
        if not isinstance(command, dict) or len(command) != 1:
            error = ApiError(ErrorCode.BAD_REQUEST, "a command is an object with one method key")
            replies.append({"error": error.as_json()})
            continue
        ((method, request),) = command.items()
        answer = await call(node, method, request if request is not None else {})
        replies.append({method: answer["result"]} if "result" in answer else answer)
    return {"replies": replies}
