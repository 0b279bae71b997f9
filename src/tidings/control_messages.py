"""The control messages workers send each other about their subscribers and users, and
their JSON (pure, no I/O): what :mod:`tidings.cluster` carries over RabbitMQ and
:class:`tidings.presence.Presence` builds its view from (see there for what each means).

Every message names its sender (``worker``); deltas and snapshots carry the sender's
sequence number, so a receiver can tell an old message from a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import orjson

from tidings.clientinfo import ClientInfo

__all__ = [
    "Bye",
    "ControlMessage",
    "Delta",
    "Hello",
    "Snapshot",
    "UserDelta",
    "decode_message",
    "encode_message",
]


@dataclass(frozen=True, slots=True)
class Delta:
    """``join`` or ``leave`` of one subscriber on the sender's worker."""

    worker: str
    seq: int
    kind: str
    channel: str
    info: ClientInfo


@dataclass(frozen=True, slots=True)
class UserDelta:
    """``online`` (first connection of ``user`` on the sender) or ``offline`` (its last)."""

    worker: str
    seq: int
    kind: str
    user: str
    since: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The sender's whole presence set: channel -> subscribers (its heartbeat)."""

    worker: str
    seq: int
    channels: Mapping[str, tuple[ClientInfo, ...]] = field(default_factory=dict)
    #: The sender's own figures (the server API's ``info`` entry for it), when it sends them.
    node: Mapping[str, Any] | None = None
    #: Its connected users: user -> since.
    users: Mapping[str, int] = field(default_factory=dict)
    #: Its start (Unix time): the older worker ranks first in the election.
    started: float = 0.0
    #: It has been up for the TTL: it may be elected.
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Hello:
    """A worker that just started asks every other for a snapshot now."""

    worker: str


@dataclass(frozen=True, slots=True)
class Bye:
    """The sender stops: forget it now rather than after the TTL."""

    worker: str


ControlMessage = Delta | UserDelta | Snapshot | Hello | Bye


def encode_message(message: ControlMessage) -> bytes:
    """One control message as compact JSON."""
    if isinstance(message, Delta | UserDelta):
        head = {"type": message.kind, "worker": message.worker, "seq": message.seq}
        if isinstance(message, Delta):
            return orjson.dumps({**head, "channel": message.channel, "info": message.info.to_obj()})
        return orjson.dumps({**head, "user": message.user, "since": message.since})
    if isinstance(message, Snapshot):
        obj: dict[str, Any] = {
            "type": "snapshot",
            "worker": message.worker,
            "seq": message.seq,
            "channels": {ch: [i.to_obj() for i in infos] for ch, infos in message.channels.items()},
            "users": message.users,
            "started": message.started,
            "settled": message.settled,
        }
        if message.node is not None:
            obj["node"] = message.node
        return orjson.dumps(obj)
    kind = "hello" if isinstance(message, Hello) else "bye"
    return orjson.dumps({"type": kind, "worker": message.worker})


def decode_message(body: bytes) -> ControlMessage:
    """Reads a control message.

    Raises:
        ValueError: the body is not a control message of a known type.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("a control message must be an object")
    kind, worker = obj.get("type"), obj.get("worker")
    if not isinstance(worker, str) or not worker:
        raise ValueError("worker must be a non-empty string")
    if kind == "hello":
        return Hello(worker)
    if kind == "bye":
        return Bye(worker)
    seq = obj.get("seq")
    if not _is_count(seq):
        raise ValueError("seq must be a positive integer")
    if kind in ("join", "leave"):
        channel = obj.get("channel")
        if not isinstance(channel, str) or not channel:
            raise ValueError("channel must be a non-empty string")
        return Delta(worker, seq, kind, channel, ClientInfo.from_obj(obj.get("info")))
    if kind in ("online", "offline"):
        user, since = obj.get("user"), obj.get("since")
        if not isinstance(user, str) or not user:
            raise ValueError("user must be a non-empty string")
        if not _is_count(since):
            raise ValueError("since must be a positive integer")
        return UserDelta(worker, seq, kind, user, since)
    if kind == "snapshot":
        raw = obj.get("channels")
        if not isinstance(raw, dict):
            raise ValueError("channels must be an object")
        channels: dict[str, tuple[ClientInfo, ...]] = {}
        for channel, infos in raw.items():
            if not isinstance(infos, list):
                raise ValueError("each channel must hold a list of client infos")
            channels[channel] = tuple(ClientInfo.from_obj(i) for i in infos)
        node = obj.get("node")
        if node is not None and not isinstance(node, dict):
            raise ValueError("node must be an object")
        # Absent from the snapshots of workers older than user presence.
        users = obj.get("users", {})
        if not isinstance(users, dict) or not all(
            isinstance(u, str) and u and _is_count(n) for u, n in users.items()
        ):
            raise ValueError("users must map user names to positive integers")
        started, settled = obj.get("started", 0.0), obj.get("settled", False)
        if isinstance(started, bool) or not isinstance(started, int | float):
            raise ValueError("started must be a number")
        if not isinstance(settled, bool):
            raise ValueError("settled must be true or false")
        return Snapshot(worker, seq, channels, node, users, float(started), settled)
    raise ValueError(f"unknown control message type {kind!r}")


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
