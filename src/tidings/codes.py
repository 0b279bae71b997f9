"""Error and disconnect codes of the client protocol, with their meaning in one place.

The numbers follow the Centrifugo client protocol so that the official SDKs react as they
are built to: error codes below 100 (or ``temporary``) are retried, other errors are final
for the call that got them; close codes 3000-3499 make the SDK reconnect, 3500-3999 stop it.
Below 3000 are the WebSocket protocol's own close codes (RFC 6455 §7.4.1), sent when a
client breaks the framing rather than the client protocol.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "DisconnectCode", "ErrorCode", "close_reason", "reconnects"]


class ErrorCode(IntEnum):
    """Codes of ``{"error": {...}}`` replies to a command."""

    INTERNAL = 100  # temporary: the SDK retries
    UNAUTHORIZED = 101
    UNKNOWN_CHANNEL = 102
    PERMISSION_DENIED = 103
    METHOD_NOT_FOUND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109  # on connect/subscribe the SDK fetches a new token and retries
    EXPIRED = 110
    TOO_MANY_REQUESTS = 111  # temporary
    UNRECOVERABLE_POSITION = 112

    @property
    def message(self) -> str:
        """The short text sent beside the code."""
        return self.name.lower().replace("_", " ")

    @property
    def temporary(self) -> bool:
        """Whether the SDK should retry the call after this error."""
        return self in (ErrorCode.INTERNAL, ErrorCode.TOO_MANY_REQUESTS)


class DisconnectCode(IntEnum):
    """WebSocket close codes; 3000-3499 ask the client to reconnect, 3500-3999 are final."""

    # --- reconnect ---
    CONNECTION_CLOSED = 3000
    SHUTDOWN = 3001
    INTERNAL_ERROR = 3004
    EXPIRED = 3005
    SUBSCRIPTION_EXPIRED = 3006
    SLOW = 3008
    WRITE_ERROR = 3009
    INSUFFICIENT_STATE = 3010
    FORCE_RECONNECT = 3011
    NO_PONG = 3012
    TOO_MANY_REQUESTS = 3013
    # --- terminal ---
    INVALID_TOKEN = 3500
    BAD_REQUEST = 3501
    STALE = 3502
    FORCE_DISCONNECT = 3503
    CONNECTION_LIMIT = 3504
    CHANNEL_LIMIT = 3505
    INAPPROPRIATE_PROTOCOL = 3506
    PERMISSION_DENIED = 3507
    NOT_AVAILABLE = 3508
    TOO_MANY_ERRORS = 3509

    @property
    def reason(self) -> str:
        """Plain-text close reason (never JSON: the SDK would parse it as legacy advice)."""
        return self.name.lower().replace("_", " ")

    @property
    def reconnect(self) -> bool:
        """Whether a client closed with this code should reconnect."""
        return self < 3500


def reconnects(code: int) -> bool:
    """Whether the SDK reconnects after a close with ``code``, one of tidings' own or one an
    application backend chose (4000-4499 reconnect, 4500-4999 are final, as for 3xxx)."""
    return not (3500 <= code < 4000 or 4500 <= code < 5000)


def close_reason(code: int) -> str:
    """The default plain-text reason of a close code ("" for an application's own code)."""
    try:
        return DisconnectCode(code).reason
    except ValueError:
        return ""


class CloseCode(IntEnum):
    """RFC 6455 close codes sent by tidings' own WebSocket layer (``protocol/wsframes.py``).

    The ``centrifuge`` SDK treats 1009 as final and the others like a dropped transport.
    """

    NORMAL = 1000  # a close answered without a code of the client's
    PROTOCOL_ERROR = 1002  # unmasked frame, reserved bits or opcode, bad fragmentation
    INVALID_DATA = 1007  # a text message that is not UTF-8
    MESSAGE_TOO_BIG = 1009  # a message over client.max_frame_bytes
