"""Server commands that act on connections or history, carried through the log.

The server API's ``subscribe``, ``unsubscribe``, ``disconnect``, ``refresh`` and
``history_remove`` must reach every worker and every node, wherever the user's
connections are. They travel as small records through the log itself (the same path as
published events), so every node applies them, in log order relative to events:

- the record carries the header ``x-tidings-command`` holding an HMAC-SHA256 of its body
  under ``api.key``; a record without a valid signature is rejected (counted, logged and
  quarantined like any bad event), so a publisher of the application's exchange cannot
  forge one;
- commands aimed at connections apply only while fresh (``issued_at`` within
  :data:`MAX_AGE` seconds): a node that replays the log when it starts does not repeat old
  disconnects;
- ``history_remove`` applies whenever it is read, replay included, because history is
  rebuilt from the log: a node that starts later must forget the same publications.

This module is pure: encoding, signing, verifying and decoding.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "COMMAND_HEADER",
    "KINDS",
    "MAX_AGE",
    "CommandError",
    "ServerCommand",
    "decode",
    "encode",
]

COMMAND_HEADER = "x-tidings-command"
#: Seconds during which a connection command still applies after it was issued.
MAX_AGE = 30.0
#: Every kind of command.
KINDS = frozenset({"subscribe", "unsubscribe", "disconnect", "refresh", "history_remove"})


class CommandError(ValueError):
    """A record that claims to be a command but is not a valid, signed one."""


@dataclass(frozen=True, slots=True)
class ServerCommand:
    """One command of the server API for every node.

    Attributes:
        kind: one of :data:`KINDS`.
        issued_at: Unix time at which the API took it.
        user: the user whose connections it acts on ("" for ``history_remove``).
        channel: the channel of ``subscribe``, ``unsubscribe``, ``history_remove``.
        client: only this connection of the user ("" for all of them).
        whitelist: connections of the user that ``disconnect`` spares.
        code: the close code of ``disconnect`` (0 for the default).
        reason: the close reason of ``disconnect`` ("" for the code's own).
        expired: ``refresh``: the connection is expired now (closed with 3005).
        expire_at: ``refresh``: the connection's new expiry, Unix time (0 for none).
    """

    kind: str
    issued_at: float
    user: str = ""
    channel: str = ""
    client: str = ""
    whitelist: tuple[str, ...] = field(default_factory=tuple)
    code: int = 0
    reason: str = ""
    expired: bool = False
    expire_at: int = 0

    def fresh(self, now: float) -> bool:
        """Whether a connection command issued at ``issued_at`` still applies at ``now``."""
        return abs(now - self.issued_at) <= MAX_AGE

    def matches(self, user: str, client: str) -> bool:
        """Whether the connection ``client`` of ``user`` is one this command acts on."""
        if user != self.user:
            return False
        if self.client and client != self.client:
            return False
        return client not in self.whitelist


def _signature(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def encode(command: ServerCommand, key: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the record carrying ``command``, signed with ``key``."""
    fields: dict[str, Any] = {"kind": command.kind, "issued_at": command.issued_at}
    for name in ("user", "channel", "client", "code", "reason", "expired", "expire_at"):
        value = getattr(command, name)
        if value:
            fields[name] = value
    if command.whitelist:
        fields["whitelist"] = list(command.whitelist)
    body = orjson.dumps(fields)
    return body, {COMMAND_HEADER: _signature(key, body)}


def decode(headers: Mapping[str, object], body: bytes, key: str | None) -> ServerCommand:
    """The command a record carries.

    Raises:
        CommandError: unsigned, wrongly signed (or no ``api.key`` here to check it with),
            or not a command this version knows.
    """
    signature = headers.get(COMMAND_HEADER)
    if isinstance(signature, bytes):
        signature = signature.decode("ascii", "replace")
    if key is None:
        raise CommandError("a server command arrived but api.key is not set on this node")
    if not isinstance(signature, str) or not hmac.compare_digest(
        signature, _signature(key, body)
    ):
        raise CommandError("server command with a wrong signature (another api.key?)")
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CommandError("server command body is not JSON") from None
    if not isinstance(fields, dict) or fields.get("kind") not in KINDS:
        raise CommandError(f"unknown server command {str(fields)[:80]!r}")
    whitelist = fields.get("whitelist", [])
    try:
        return ServerCommand(
            kind=fields["kind"],
            issued_at=float(fields["issued_at"]),
            user=str(fields.get("user", "")),
            channel=str(fields.get("channel", "")),
            client=str(fields.get("client", "")),
            whitelist=tuple(str(c) for c in whitelist),
            code=int(fields.get("code", 0)),
            reason=str(fields.get("reason", "")),
            expired=bool(fields.get("expired", False)),
            expire_at=int(fields.get("expire_at", 0)),
        )
    except (KeyError, TypeError, ValueError):
        raise CommandError("server command with a malformed field") from None
