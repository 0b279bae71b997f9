"""Centrifugo's proxy JSON: the request bodies tidings sends and the answers it reads.

Every request carries the connection's ``client``, ``transport``, ``protocol`` and
``encoding`` (both ``json``: tidings speaks the JSON protocol), then what the event adds:
``user`` and the ``meta`` the connect proxy attached, the ``channel``, the RPC ``method``,
the client's ``data``. An answer is a JSON object with one of ``disconnect`` (close the
connection with ``code`` and ``reason``), ``error`` (answer the command with ``code``,
``message``, ``temporary``) or ``result``; anything else is a :class:`BadAnswer`, which
the client turns into an internal error. ``data``/``info`` may come base64-encoded
(``b64data``/``b64info``); for JSON clients their bytes must be JSON.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from tidings.channels import NameKind, channel_problem, name_problem
from tidings.protocol.operations import (
    Answered,
    Approved,
    ConnectCall,
    Connected,
    Disconnected,
    Operation,
    Outcome,
    Peer,
    ProxyPublishCall,
    RefreshCall,
    Refreshed,
    Rejected,
    RpcCall,
    SubscribeCall,
    Subscribed,
)

__all__ = ["BadAnswer", "decode_answer", "encode_request", "event_of"]

_MAX_UINT32 = 2**32 - 1
#: Close codes an application may choose (RFC 6455 leaves 3000-4999 to applications).
_DISCONNECT_CODES = range(3000, 5000)


class BadAnswer(ValueError):
    """The backend's answer is not what the proxy protocol defines."""


def event_of(operation: Operation) -> str:
    """The proxy event an operation is: ``connect``, ``refresh``, ``subscribe``, ``rpc`` or
    ``publish``.

    Raises:
        ValueError: the operation is not one for the backend (a publication to the log).
    """
    if isinstance(operation, ConnectCall):
        return "connect"
    if isinstance(operation, RefreshCall):
        return "refresh"
    if isinstance(operation, SubscribeCall):
        return "subscribe"
    if isinstance(operation, RpcCall):
        return "rpc"
    if isinstance(operation, ProxyPublishCall):
        return "publish"
    raise ValueError(f"{type(operation).__name__} is not a proxy event")


def encode_request(operation: Operation, peer: Peer) -> bytes:
    """The JSON body of the proxy request for ``operation`` from ``peer``."""
    body: dict[str, Any] = {
        "client": operation.client,
        "transport": peer.transport,
        "protocol": "json",
        "encoding": "json",
    }
    if isinstance(operation, ConnectCall):
        request = operation.request
        if request.name:
            body["name"] = request.name
        if request.version:
            body["version"] = request.version
        _put_raw(body, "data", request.data)
        return orjson.dumps(body)
    body["user"] = operation.user
    _put_raw(body, "meta", operation.meta)
    if isinstance(operation, SubscribeCall):
        body["channel"] = operation.request.channel
        _put_raw(body, "data", operation.request.data)
    elif isinstance(operation, RpcCall):
        body["method"] = operation.method
        _put_raw(body, "data", operation.data)
    elif isinstance(operation, ProxyPublishCall):
        body["channel"] = operation.channel
        _put_raw(body, "data", operation.data)
        _put_raw(body, "info", operation.info)
    return orjson.dumps(body)


def _put_raw(body: dict[str, Any], key: str, value: bytes | None) -> None:
    if value is not None:
        body[key] = orjson.Fragment(value)


def decode_answer(operation: Operation, answer: bytes) -> Outcome:
    """The outcome the backend's ``answer`` gives ``operation``.

    Raises:
        BadAnswer: not JSON, not an object, or a field of the wrong type or range.
    """
    try:
        obj = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise BadAnswer("not JSON") from None
    if not isinstance(obj, dict):
        raise BadAnswer("not a JSON object")
    disconnect = obj.get("disconnect")
    if disconnect is not None:
        return _disconnect(disconnect)
    error = obj.get("error")
    if error is not None:
        return _error(error)
    result = obj.get("result")
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise BadAnswer("result must be an object")
    if isinstance(operation, ConnectCall):
        # No result is an anonymous connection, as in Centrifugo.
        return _connected(result)
    if isinstance(operation, RefreshCall):
        if "result" not in obj or obj["result"] is None:
            return Refreshed(expired=True)
        return Refreshed(
            _bool(result, "expired"), _unix_time(result, "expire_at"), _json(result, "info")
        )
    if isinstance(operation, SubscribeCall):
        return Subscribed(_json(result, "data"), _json(result, "info"))
    if isinstance(operation, ProxyPublishCall):
        return Approved(_json(result, "data"))
    return Answered(_json(result, "data"))


def _disconnect(value: object) -> Disconnected:
    if not isinstance(value, dict):
        raise BadAnswer("disconnect must be an object")
    code = value.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or code not in _DISCONNECT_CODES:
        raise BadAnswer("disconnect.code must be a whole number from 3000 to 4999")
    return Disconnected(code, _str(value, "reason"))


def _error(value: object) -> Rejected:
    if not isinstance(value, dict):
        raise BadAnswer("error must be an object")
    code = value.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= _MAX_UINT32:
        raise BadAnswer("error.code must be an unsigned 32-bit number")
    return Rejected(code, _str(value, "message"), _bool(value, "temporary"))


def _connected(result: dict[str, Any]) -> Connected:
    user = _str(result, "user")
    problem = name_problem(user, NameKind.USER)
    if problem is not None:
        raise BadAnswer(f"result.user: {problem}")
    channels = result.get("channels") or []
    if not isinstance(channels, list):
        raise BadAnswer("result.channels must be a list of channel names")
    subs = result.get("subs") or {}
    if not isinstance(subs, dict):
        raise BadAnswer("result.subs must be an object")
    names: list[str] = []
    sub_data: list[tuple[str, bytes]] = []
    for channel in [*channels, *subs]:
        problem = channel_problem(channel)
        if problem is not None:
            raise BadAnswer(f"result channel: {problem}")
        if channel not in names:
            names.append(channel)
    for channel, options in subs.items():
        if options is None:
            continue
        if not isinstance(options, dict):
            raise BadAnswer("result.subs entries must be objects")
        data = _json(options, "data")
        if data is not None:
            sub_data.append((channel, data))
    return Connected(
        user,
        _unix_time(result, "expire_at"),
        _json(result, "info"),
        _json(result, "data"),
        tuple(names),
        tuple(sub_data),
        _json(result, "meta", b64=False),
    )


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadAnswer(f"{key} must be a string")
    return value


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadAnswer(f"{key} must be true or false")
    return value


def _unix_time(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    # Below 2**53: the SDK reads times as JS numbers.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise BadAnswer(f"{key} must be a Unix time in seconds")
    return value


def _json(obj: dict[str, Any], key: str, b64: bool = True) -> bytes | None:
    """``obj[key]`` as compact JSON, else the JSON in base64 ``obj["b64" + key]``, else None.

    Compact, always: a message must stay on one line of a frame."""
    value = obj.get(key)
    if value is not None:
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:  # an integer over 64 bits
            raise BadAnswer(f"{key} cannot be encoded") from None
    encoded = obj.get(f"b64{key}") if b64 else None
    if encoded is None:
        return None
    if not isinstance(encoded, str):
        raise BadAnswer(f"b64{key} must be a base64 string")
    try:
        return orjson.dumps(orjson.loads(base64.b64decode(encoded, validate=True)))
    except (binascii.Error, orjson.JSONDecodeError, orjson.JSONEncodeError):
        raise BadAnswer(f"b64{key} must be base64 of JSON (tidings speaks JSON)") from None
