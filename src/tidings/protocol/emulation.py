"""The emulation request: commands of an HTTP-stream or SSE client, posted on the side.

An emulated connection reads its replies and pushes from a long-lived stream, and sends
every later command in a separate ``POST`` of ``{"node", "session", "data"}``: ``node``
and ``session`` as the connect result gave them, ``data`` the command frame itself as a
JSON string (newline-joined commands, the same text a WebSocket frame would carry). The
same JSON carries a request between workers when the session lives on another one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "MAX_ID_LENGTH",
    "BadEmulationRequest",
    "EmulationRequest",
    "decode_emulation_request",
    "encode",
]

#: The longest ``node`` and ``session`` accepted: ours are far shorter, and a node id
#: becomes an AMQP routing key (at most 255 bytes).
MAX_ID_LENGTH = 128


class BadEmulationRequest(ValueError):
    """The request cannot be understood (answered 400)."""


@dataclass(frozen=True, slots=True)
class EmulationRequest:
    """One posted command frame and the session it is for."""

    #: The worker holding the session.
    node: str
    #: The session's id (a secret: whoever knows it may act as the connection).
    session: str
    #: The command frame (UTF-8 JSON, newline-joined commands).
    data: bytes


def _identifier(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadEmulationRequest(f"{key} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH or not value.isascii() or not value.isprintable():
        raise BadEmulationRequest(f"{key} is not an id this server hands out")
    return value


def decode_emulation_request(body: bytes, max_data_bytes: int) -> EmulationRequest:
    """Reads a posted request.

    Raises:
        BadEmulationRequest: not JSON, a field missing or of the wrong type, or ``data``
            over ``max_data_bytes`` (the per-frame limit of the connection).
    """
    try:
        decoded: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadEmulationRequest(f"not JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise BadEmulationRequest("the request must be a JSON object")
    node = _identifier(decoded, "node")
    session = _identifier(decoded, "session")
    data = decoded.get("data")
    if not isinstance(data, str):
        raise BadEmulationRequest("data must be a string (the command frame)")
    # orjson refuses lone surrogates, so every decoded string encodes.
    encoded = data.encode()
    if len(encoded) > max_data_bytes:
        raise BadEmulationRequest(f"data over {max_data_bytes} bytes (client.max_frame_bytes)")
    return EmulationRequest(node, session, encoded)


def encode(request: EmulationRequest) -> bytes:
    """``request`` as the JSON a client posts (how one worker hands it to another)."""
    return orjson.dumps(
        {
            "node": request.node,
            "session": request.session,
            "data": request.data.decode(),
        }
    )
