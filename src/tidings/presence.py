"""Presence: who is subscribed to a channel, cluster-wide, as soft state (pure, no I/O).

Every worker knows its own subscribers exactly (``add_local``/``remove_local``) and keeps
a view of every other worker's, built from the control messages they send (see
:mod:`tidings.cluster`, which carries them over RabbitMQ):

- ``join`` / ``leave``: one subscriber more or less, sent as it happens;
- ``snapshot``: the sender's whole set, sent every ``cluster.heartbeat_interval``; it
  replaces what was known of the sender, so a lost or reordered delta is corrected by the
  next heartbeat at the latest;
- ``bye``: the sender is stopping;
- ``online`` / ``offline``: a user's first connection on the sender opened, or its last
  one closed (user presence: who is connected anywhere, whatever they subscribe to).

The snapshot carries the sender's connected users too, each with the *since* number it
gave the user's arrival (unique per worker, so ``(worker, since)`` names one stay of a
user on a worker on every worker alike), its start time and whether it has *settled*
(been up for the TTL, so its view is whole): what :mod:`tidings.lifecycle` needs to
elect the one worker that reports users coming online and going offline.

A worker not heard from for ``cluster.presence_ttl`` is presumed dead and its subscribers
leave (:meth:`Presence.expire`). Times are the receiver's own monotonic clock, so no two
machines' clocks are ever compared. Every change of the view is returned as
:class:`Change` values, from which the node pushes ``join``/``leave`` to its subscribers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import orjson

__all__ = [
    "Bye",
    "Change",
    "ClientInfo",
    "ControlMessage",
    "Delta",
    "Hello",
    "Presence",
    "Snapshot",
    "UserChange",
    "UserDelta",
    "decode_message",
    "encode_message",
]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One subscriber as the protocol shows it (``ClientInfo`` of the client protocol).

    Attributes:
        user: the connection's user ("" for anonymous).
        client: the connection's client id (unique in the cluster).
        conn_info: compact JSON of the connection token's ``info`` claim, or None.
        chan_info: compact JSON of channel-specific info, or None.
    """

    user: str
    client: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None

    def to_json(self) -> bytes:
        """``{"user":…,"client":…,"conn_info":…,"chan_info":…}`` (info fields when set)."""
        out = b'{"user":%b,"client":%b' % (orjson.dumps(self.user), orjson.dumps(self.client))
        if self.conn_info is not None:
            out += b',"conn_info":%b' % self.conn_info
        if self.chan_info is not None:
            out += b',"chan_info":%b' % self.chan_info
        return out + b"}"

    def to_obj(self) -> dict[str, Any]:
        """The same as plain data."""
        obj: dict[str, Any] = {"user": self.user, "client": self.client}
        if self.conn_info is not None:
            obj["conn_info"] = orjson.Fragment(self.conn_info)
        if self.chan_info is not None:
            obj["chan_info"] = orjson.Fragment(self.chan_info)
        return obj

    @classmethod
    def from_obj(cls, obj: object) -> ClientInfo:
        """Reads a decoded ``ClientInfo`` object.

        Raises:
            ValueError: it is not an object with string ``user`` and non-empty ``client``.
        """
        if not isinstance(obj, dict):
            raise ValueError("client info must be an object")
        user, client = obj.get("user", ""), obj.get("client")
        if not isinstance(user, str) or not isinstance(client, str) or not client:
            raise ValueError("client info needs a string user and a non-empty client")
        conn, chan = obj.get("conn_info"), obj.get("chan_info")
        return cls(
            user,
            client,
            None if conn is None else orjson.dumps(conn),
            None if chan is None else orjson.dumps(chan),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """A subscriber that appeared (``join``) or disappeared (``leave``) from a channel."""

    kind: str
    channel: str
    info: ClientInfo


@dataclass(frozen=True, slots=True)
class UserChange:
    """A user that came online (``online``: its first connection anywhere in the cluster)
    or went offline (``offline``: its last one), as this worker's view saw it.

    Attributes:
        kind: ``online`` or ``offline``.
        user: the user.
        worker: the worker whose connection made the change (for ``offline`` after
            expiry: the silent worker).
        since: that worker's number for the user's stay on it: with ``worker``, it names
            the change the same way on every worker that sees it.
        reason: for ``offline``: ``disconnect`` or ``expired`` (the worker went silent).
    """

    kind: str
    user: str
    worker: str
    since: int
    reason: str = ""


# ---------------------------------------------------------------------------- messages
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


# ---------------------------------------------------------------------------- the view
class _Worker:
    """What is known of one other worker."""

    __slots__ = ("channels", "last_seen", "node", "seq", "settled", "started", "users")

    def __init__(self, now: float) -> None:
        self.last_seen = now
        self.seq = 0
        self.channels: dict[str, dict[str, ClientInfo]] = {}
        self.node: Mapping[str, Any] | None = None
        self.users: dict[str, int] = {}
        self.started = 0.0
        #: Eligible in the election; False until its first snapshot says so.
        self.settled = False


class Presence:
    """This worker's subscribers and its view of every other worker's.

    Args:
        ttl: seconds after which a silent worker's subscribers leave.
        worker: this worker's id (what its user changes are named with).
        started: this worker's start (Unix time), its rank in the election.
        settle_at: monotonic time from which this worker has a whole view and may be
            elected (start + ``ttl`` in a cluster; 0 for a worker alone).
    """

    def __init__(
        self, ttl: float, worker: str = "", started: float = 0.0, settle_at: float = 0.0
    ) -> None:
        self.ttl = ttl
        self.worker = worker
        self.started = started
        self.settle_at = settle_at
        self._local: dict[str, dict[str, ClientInfo]] = {}
        self._workers: dict[str, _Worker] = {}
        self._local_users: dict[str, int] = {}
        self._serial = 0
        #: Workers (this one included) on which each user is connected.
        self._user_count: dict[str, int] = {}
        self._user_changes: list[UserChange] = []

    # ------------------------------------------------------------------ local side
    def add_local(self, channel: str, info: ClientInfo) -> bool:
        """Adds a subscriber of this worker; False when it was already there."""
        members = self._local.setdefault(channel, {})
        if info.client in members:
            return False
        members[info.client] = info
        return True

    def remove_local(self, channel: str, client: str) -> ClientInfo | None:
        """Removes a subscriber of this worker; returns it, or None when it was not there."""
        members = self._local.get(channel)
        if members is None:
            return None
        info = members.pop(client, None)
        if not members:
            del self._local[channel]
        return info

    def local_channels(self) -> dict[str, tuple[ClientInfo, ...]]:
        """This worker's whole set, for its snapshot."""
        return {ch: tuple(members.values()) for ch, members in self._local.items()}

    def add_local_user(self, user: str) -> int:
        """``user``'s first connection on this worker opened; returns the stay's *since*
        number (to announce), or 0 when the user was already connected here."""
        if user in self._local_users:
            return 0
        self._serial += 1
        self._local_users[user] = self._serial
        self._user_entered(user, self.worker, self._serial)
        return self._serial

    def remove_local_user(self, user: str) -> int:
        """``user``'s last connection on this worker closed; returns the stay's *since*
        number, or 0 when it was not connected here."""
        since = self._local_users.pop(user, 0)
        if since:
            self._user_left(user, self.worker, since, "disconnect")
        return since

    def local_users(self) -> dict[str, int]:
        """This worker's connected users (user -> since), for its snapshot."""
        return dict(self._local_users)

    def settled(self, now: float) -> bool:
        """Whether this worker has been up long enough to have a whole view."""
        return now >= self.settle_at

    def _user_entered(self, user: str, worker: str, since: int) -> None:
        count = self._user_count.get(user, 0)
        self._user_count[user] = count + 1
        if not count:
            self._user_changes.append(UserChange("online", user, worker, since))

    def _user_left(self, user: str, worker: str, since: int, reason: str) -> None:
        count = self._user_count.get(user, 0) - 1
        if count > 0:
            self._user_count[user] = count
            return
        self._user_count.pop(user, None)
        self._user_changes.append(UserChange("offline", user, worker, since, reason))

    # ------------------------------------------------------------------ remote side
    def apply(self, message: ControlMessage, now: float) -> list[Change]:
        """Merges a message of another worker into the view; returns what changed.

        A delta or snapshot older than one already applied from its sender (by ``seq``)
        is ignored: it can only arrive late, and the newer state already includes it.
        """
        if isinstance(message, Hello):
            self._seen(message.worker, now)
            return []
        if isinstance(message, Bye):
            return self._drop(message.worker, "disconnect")
        worker = self._seen(message.worker, now)
        if message.seq <= worker.seq:
            return []
        worker.seq = message.seq
        if isinstance(message, Snapshot):
            if message.node is not None:
                worker.node = message.node
            worker.started, worker.settled = message.started, message.settled
            self._replace_users(message.worker, worker, message.users)
            return self._replace(worker, message.channels)
        if isinstance(message, UserDelta):
            self._apply_user(message, worker)
            return []
        members = worker.channels.setdefault(message.channel, {})
        client = message.info.client
        changes: list[Change] = []
        if message.kind == "join":
            if client not in members:
                changes.append(Change("join", message.channel, message.info))
            members[client] = message.info
        else:
            known = members.pop(client, None)
            if known is not None:
                changes.append(Change("leave", message.channel, known))
        if not members:
            del worker.channels[message.channel]
        return changes

    def expire(self, now: float) -> list[Change]:
        """Forgets every worker silent for ``ttl`` or longer; their subscribers leave."""
        dead = [w for w, state in self._workers.items() if now - state.last_seen >= self.ttl]
        changes: list[Change] = []
        for worker in dead:
            changes.extend(self._drop(worker, "expired"))
        return changes

    def _apply_user(self, message: UserDelta, worker: _Worker) -> None:
        known = worker.users.get(message.user)
        if message.kind == "online":
            if known == message.since:
                return
            if known is not None:  # its offline was lost: that stay ended
                self._user_left(message.user, message.worker, known, "disconnect")
            worker.users[message.user] = message.since
            self._user_entered(message.user, message.worker, message.since)
        elif known == message.since:
            del worker.users[message.user]
            self._user_left(message.user, message.worker, known, "disconnect")

    def _replace_users(self, name: str, worker: _Worker, users: Mapping[str, int]) -> None:
        old = worker.users
        for user, since in old.items():
            if users.get(user) != since:
                self._user_left(user, name, since, "disconnect")
        for user, since in users.items():
            if old.get(user) != since:
                self._user_entered(user, name, since)
        worker.users = dict(users)

    def _seen(self, worker: str, now: float) -> _Worker:
        state = self._workers.get(worker)
        if state is None:
            state = self._workers[worker] = _Worker(now)
        state.last_seen = now
        return state

    def _drop(self, worker: str, reason: str) -> list[Change]:
        state = self._workers.pop(worker, None)
        if state is None:
            return []
        for user, since in sorted(state.users.items()):
            self._user_left(user, worker, since, reason)
        return [
            Change("leave", channel, info)
            for channel, members in state.channels.items()
            for info in members.values()
        ]

    @staticmethod
    def _replace(worker: _Worker, channels: Mapping[str, tuple[ClientInfo, ...]]) -> list[Change]:
        changes: list[Change] = []
        new: dict[str, dict[str, ClientInfo]] = {
            ch: {i.client: i for i in infos} for ch, infos in channels.items() if infos
        }
        for channel, members in worker.channels.items():
            fresh = new.get(channel, {})
            changes.extend(
                Change("leave", channel, info)
                for client, info in members.items()
                if client not in fresh
            )
        for channel, members in new.items():
            old = worker.channels.get(channel, {})
            changes.extend(
                Change("join", channel, info)
                for client, info in members.items()
                if client not in old
            )
        worker.channels = new
        return changes

    # ------------------------------------------------------------------ queries
    @property
    def workers(self) -> int:
        """Other workers currently known (alive as far as this one can tell)."""
        return len(self._workers)

    def nodes(self) -> list[Mapping[str, Any]]:
        """The figures the other live workers sent with their last snapshot, in the order
        they were first heard from (a worker whose snapshot has not come yet is left out)."""
        return [state.node for state in self._workers.values() if state.node is not None]

    def members(self, channel: str) -> dict[str, ClientInfo]:
        """Every subscriber of ``channel`` in the cluster: client id -> info."""
        result = dict(self._local.get(channel, {}))
        for state in self._workers.values():
            members = state.channels.get(channel)
            if members:
                result.update(members)
        return result

    def stats(self, channel: str) -> tuple[int, int]:
        """``(num_clients, num_users)`` of ``channel`` in the cluster (anonymous counts as
        one user)."""
        members = self.members(channel)
        return len(members), len({info.user for info in members.values()})

    def online(self, user: str) -> bool:
        """Whether ``user`` has a connection on some live worker of the cluster."""
        return user in self._user_count

    def online_users(self) -> Iterator[str]:
        """Every user connected somewhere in the cluster (each once)."""
        return iter(self._user_count)

    def user_changes(self) -> list[UserChange]:
        """Takes the user changes since the last call, in the order the view saw them."""
        changes, self._user_changes = self._user_changes, []
        return changes

    def electors(self, now: float) -> Iterator[tuple[float, str, float]]:
        """The workers that may be elected, as ``(started, worker id, last seen)``: this
        one (seen ``now``) once settled, and every other live one whose last snapshot
        said it has settled."""
        if self.settled(now):
            yield self.started, self.worker, now
        for name, state in self._workers.items():
            if state.settled:
                yield state.started, name, state.last_seen

    def channels(self) -> Iterator[str]:
        """Channels with at least one subscriber anywhere (each once)."""
        seen = set(self._local)
        yield from self._local
        for state in self._workers.values():
            for channel in state.channels:
                if channel not in seen:
                    seen.add(channel)
                    yield channel
