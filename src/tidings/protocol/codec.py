"""Pure encoding and decoding of client protocol frames.

A frame holds one or more JSON messages joined by ``\\n``. Decoding turns a frame into
typed :class:`~tidings.protocol.messages.Command` objects; encoding turns replies into
compact one-line JSON (never a blank line, never a raw newline inside a message).
"""

from __future__ import annotations

from typing import Any

import orjson

from tidings.codes import ErrorCode
from tidings.protocol.messages import (
    Command,
    ConnectRequest,
    HistoryRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RecoverPosition,
    RefreshRequest,
    Request,
    RpcRequest,
    SubRefreshRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)

__all__ = [
    "METHODS",
    "ProtocolError",
    "decode_connect_request",
    "decode_frame",
    "encode",
    "encode_error",
    "encode_reply",
    "raw",
]

_MAX_ID = 2**32 - 1
#: Every method key of the protocol, in the order a command is searched for one.
METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "refresh",
    "sub_refresh",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
)


class ProtocolError(ValueError):
    """The frame cannot be understood at all; the connection is closed with 3501."""


def raw(json_bytes: bytes) -> orjson.Fragment:
    """Embeds already-encoded JSON into a message without re-serialising it."""
    return orjson.Fragment(json_bytes)


def encode(message: dict[str, Any]) -> bytes:
    """One message as compact JSON on one line."""
    return orjson.dumps(message)


def encode_reply(command_id: int, method: str, result: dict[str, Any]) -> bytes:
    """A successful reply; the result object is always present, even when empty."""
    return orjson.dumps({"id": command_id, method: result})


def encode_error(
    command_id: int, code: int, message: str = "", temporary: bool | None = None
) -> bytes:
    """An error reply to command ``command_id``: one of tidings' codes (its message and
    temporariness by default) or an application backend's own."""
    if isinstance(code, ErrorCode):
        message = message or code.message
        if temporary is None:
            temporary = code.temporary
    error: dict[str, Any] = {"code": int(code), "message": message}
    if temporary:
        error["temporary"] = True
    return orjson.dumps({"id": command_id, "error": error})


def decode_frame(frame: str | bytes, max_commands: int) -> list[Command]:
    """Splits a frame into commands, in order.

    Raises:
        ProtocolError: not JSON, not an object, a bad id, or more than ``max_commands``.
    """
    if isinstance(frame, str):
        frame = frame.encode("utf-8", "surrogatepass")
    commands: list[Command] = []
    for line in frame.split(b"\n"):
        if not line.strip():
            continue  # tolerate a trailing newline or a blank line from older clients
        if len(commands) >= max_commands:
            raise ProtocolError(f"more than {max_commands} commands in one frame")
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"not JSON: {exc}") from None
        commands.append(decode_command(obj))
    return commands


def decode_command(obj: object) -> Command:
    """Turns one decoded JSON value into a Command.

    Raises:
        ProtocolError: when ``obj`` is not an object or its id is not a uint32.
    """
    if not isinstance(obj, dict):
        raise ProtocolError("a command must be a JSON object")
    cid = obj.get("id", 0)
    if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid <= _MAX_ID:
        raise ProtocolError("id must be an unsigned 32-bit integer")
    method = next((m for m in METHODS if m in obj), "")
    if not method:
        if any(k != "id" for k in obj):
            return Command(cid, "?", raw=obj)
        return Command(cid, "")  # pong
    body = obj[method]
    if body is None:
        body = {}
    if not isinstance(body, dict):
        return Command(cid, method, error=f"{method} must be an object")
    try:
        request = _REQUEST_DECODERS[method](body) if method in _REQUEST_DECODERS else None
    except _BadField as exc:
        return Command(cid, method, error=str(exc))
    return Command(cid, method, request)


class _BadField(ValueError):
    pass


def _str(body: dict[str, Any], name: str, required: bool = False) -> str:
    value = body.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _BadField(f"{name} must be a string")
    if required and not value:
        raise _BadField(f"{name} is required")
    return value


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _BadField(f"{name} must be true or false")
    return value


def _position(body: dict[str, Any]) -> RecoverPosition:
    offset = body.get("offset", 0) or 0
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise _BadField("offset must be a non-negative integer")
    return RecoverPosition(offset, _str(body, "epoch"))


def _data(body: dict[str, Any]) -> bytes | None:
    """The ``data`` field as compact JSON, None when absent or null."""
    value = body.get("data")
    if value is None:
        return None
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer over 64 bits, valid in JSON
        raise _BadField("data cannot be encoded") from None


def _connect(body: dict[str, Any]) -> ConnectRequest:
    subs_raw = body.get("subs") or {}
    if not isinstance(subs_raw, dict):
        raise _BadField("subs must be an object")
    subs: dict[str, RecoverPosition] = {}
    for channel, sub in subs_raw.items():
        if not isinstance(sub, dict):
            raise _BadField("subs entries must be objects")
        if _bool(sub, "recover"):
            subs[channel] = _position(sub)
    return ConnectRequest(
        _str(body, "token"), _str(body, "name"), _str(body, "version"), subs, _data(body)
    )


def decode_connect_request(body: object) -> ConnectRequest:
    """Decodes a bare connect request (the unidirectional transports' first message).

    Raises:
        ProtocolError: when it is not a valid connect request.
    """
    if not isinstance(body, dict):
        raise ProtocolError("the connect request must be a JSON object")
    try:
        return _connect(body)
    except _BadField as exc:
        raise ProtocolError(str(exc)) from None


def _subscribe(body: dict[str, Any]) -> SubscribeRequest:
    recover = _bool(body, "recover")
    return SubscribeRequest(
        _str(body, "channel", required=True),
        _str(body, "token"),
        recover,
        _position(body) if recover else RecoverPosition(),
        _data(body),
        join_leave=_bool(body, "join_leave"),
    )


def _rpc(body: dict[str, Any]) -> RpcRequest:
    return RpcRequest(_str(body, "method"), _data(body))


def _publish(body: dict[str, Any]) -> PublishRequest:
    if "data" not in body:
        raise _BadField("data is required")
    channel = _str(body, "channel", required=True)
    return PublishRequest(channel, _data(body) or b"null")


def _presence(body: dict[str, Any]) -> PresenceRequest:
    return PresenceRequest(_str(body, "channel", required=True))


def _presence_stats(body: dict[str, Any]) -> PresenceStatsRequest:
    return PresenceStatsRequest(_str(body, "channel", required=True))


def _unsubscribe(body: dict[str, Any]) -> UnsubscribeRequest:
    return UnsubscribeRequest(_str(body, "channel", required=True))


def _refresh(body: dict[str, Any]) -> RefreshRequest:
    return RefreshRequest(_str(body, "token", required=True))


def _sub_refresh(body: dict[str, Any]) -> SubRefreshRequest:
    return SubRefreshRequest(_str(body, "channel", required=True), _str(body, "token", True))


def _history(body: dict[str, Any]) -> HistoryRequest:
    limit = body.get("limit", 0) or 0
    if isinstance(limit, bool) or not isinstance(limit, int) or not -(2**31) <= limit < 2**31:
        raise _BadField("limit must be a 32-bit integer")
    since_raw = body.get("since")
    if since_raw is not None and not isinstance(since_raw, dict):
        raise _BadField("since must be an object")
    since = _position(since_raw) if since_raw is not None else None
    channel = _str(body, "channel", required=True)
    return HistoryRequest(channel, limit, since, _bool(body, "reverse"))


_REQUEST_DECODERS: dict[str, Any] = {
    "connect": _connect,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "refresh": _refresh,
    "sub_refresh": _sub_refresh,
    "history": _history,
    "rpc": _rpc,
    "publish": _publish,
    "presence": _presence,
    "presence_stats": _presence_stats,
}


def request_type(method: str) -> type[Request] | None:
    """The request class a method decodes to (None for methods without one)."""
    return {
        "connect": ConnectRequest,
        "subscribe": SubscribeRequest,
        "unsubscribe": UnsubscribeRequest,
        "refresh": RefreshRequest,
        "sub_refresh": SubRefreshRequest,
        "history": HistoryRequest,
        "rpc": RpcRequest,
        "publish": PublishRequest,
        "presence": PresenceRequest,
        "presence_stats": PresenceStatsRequest,
    }.get(method)
