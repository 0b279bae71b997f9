"""Presence: who is subscribed to a channel, cluster-wide, as soft state (pure, no I/O).

Every worker knows its own subscribers exactly (``add_local``/``remove_local``) and keeps
a view of every other worker's, built from the control messages they send
(:mod:`tidings.control_messages`; :mod:`tidings.cluster` carries them over RabbitMQ):

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
from dataclasses import dataclass
from typing import Any

from tidings.clientinfo import ClientInfo
from tidings.control_messages import Bye, ControlMessage, Hello, Snapshot, UserDelta

__all__ = ["Change", "Presence", "UserChange"]


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

    def worker_ids(self) -> list[str]:
        """The ids of the other workers currently known."""
        return list(self._workers)

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
