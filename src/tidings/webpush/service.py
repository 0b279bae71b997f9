"""Web Push as the node sees it: registering a page's subscription, and turning a
publication into push messages for the users of its channel who are not connected.

Who is pushed: each user named by a user-limited channel (``name#alice`` or
``ns:name#alice,bob``) of a namespace with ``web_push = true``, who has no live connection
anywhere in the cluster when the publication is read, gets one message per registered
subscription (browser profile). Other channels name no one to push to.

Which worker sends: every node reads every publication, so exactly one must act. The
sender of a user's messages is the worker ranked first for that user among the workers
that share the sending, as this worker knows them (``workers``: the node gives the live,
settled ones; rendezvous hashing: the highest digest of worker id and user), the same on
every worker that knows the same workers. When workers come or go, views differ for up
to a heartbeat, and a message may then be sent twice or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from tidings.config import WebPushSettings
from tidings.metrics import Metrics
from tidings.webpush.address import check_host
from tidings.webpush.message import payload
from tidings.webpush.sender import PushJob, Sender, SubscriptionStore
from tidings.webpush.subscription import (
    KIND,
    PushSubscription,
    SubscriptionError,
    SubscriptionLimit,
    decode_entry,
    encode_entry,
    entry_key,
    parse_subscription,
)
from tidings.webpush.vapid import VapidSigner, load_key

__all__ = ["OnlineView", "WebPush", "owner"]

log = logging.getLogger(__name__)


class OnlineView(Protocol):
    """Whether a user has a live connection anywhere in the cluster."""

    def online(self, user: str) -> bool:
        """True while ``user`` has at least one connection on some worker."""


def owner(user: str, workers: Iterable[str]) -> str:
    """The worker that sends ``user``'s push messages, of ``workers`` (rendezvous hashing:
    a worker that leaves moves only its own users)."""
    return max(workers, key=lambda w: hashlib.sha256(f"{w}\x00{user}".encode()).digest())


class WebPush:
    """Subscriptions in the ledger, the decision of who is pushed, and the sender.

    Args:
        workers: the ids of the workers that share the sending, this one included when it
            sends (one that is not listed sends nothing).
        worker: this worker's id.
    """

    def __init__(
        self,
        settings: WebPushSettings,
        store: SubscriptionStore,
        metrics: Metrics,
        online: OnlineView,
        workers: Callable[[], Sequence[str]],
        worker: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.vapid_private_key is not None
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.online = online
        self._workers = workers
        self.worker = worker
        self.clock = clock
        self.signer = VapidSigner(load_key(settings.vapid_private_key), settings.vapid_subject)
        self.sender = Sender(settings, self.signer, store, metrics, clock)
        #: False until the node has started: records read while warming up are history.
        self.live = False
        # The ledger's entries by user (a publication looks its users up), kept current
        # by the ledger's change callback.
        self._by_user: dict[str, dict[str, PushSubscription]] = {}
        self._users: dict[str, str] = {}
        store.on_change(self._on_change)

    def _on_change(self, kind: str, key: str, value: bytes | None) -> None:
        if kind != KIND:
            return
        user = self._users.pop(key, None)
        if user is not None:
            subs = self._by_user[user]
            del subs[key]
            if not subs:
                del self._by_user[user]
        entry = decode_entry(value) if value is not None else None
        if entry is not None:
            self._users[key] = entry[0]
            self._by_user.setdefault(entry[0], {})[key] = entry[1]

    @property
    def public_key(self) -> str:
        """The VAPID public key in base64url: the pages' ``applicationServerKey``."""
        return self.signer.public_key

    async def start(self) -> None:
        """Indexes the ledger's subscriptions (replayed by now) and starts sending."""
        for key, value in self.store.items(KIND):
            self._on_change(KIND, key, value)
        await self.sender.start()
        self.live = True

    async def close(self) -> None:
        """Stops sending (what is queued is lost)."""
        self.live = False
        await self.sender.close()

    # ------------------------------------------------------------------ registration
    def subscriptions(self, user: str) -> list[tuple[str, PushSubscription]]:
        """``user``'s registered subscriptions, with their ledger keys."""
        return list(self._by_user.get(user, {}).items())

    async def subscribe(self, user: str, obj: object) -> PushSubscription:
        """Registers ``obj`` (``PushSubscription.toJSON()``) for ``user``; registering the
        same endpoint again replaces its keys.

        Raises:
            SubscriptionError: refused (the reason is for the page); SubscriptionLimit
                when the user has ``max_subscriptions_per_user`` already.
            LedgerError: the ledger could not take the write.
        """
        if not user:
            raise SubscriptionError("push subscriptions belong to a user; connect with one")
        allow_private = self.settings.allow_private_endpoints
        try:
            sub = parse_subscription(obj, allow_private=allow_private)
            if not allow_private:
                problem = await check_host(sub.host, sub.port)
                if problem is not None:
                    raise SubscriptionError(problem)
        except SubscriptionError:
            self.metrics.web_push_subscriptions.labels("refused").inc()
            raise
        key = entry_key(user, sub.endpoint)
        known = self.store.get(KIND, key) is not None
        limit = self.settings.max_subscriptions_per_user
        if not known and len(self.subscriptions(user)) >= limit:
            self.metrics.web_push_subscriptions.labels("refused").inc()
            raise SubscriptionLimit(f"a user may register at most {limit} push subscriptions")
        await self.store.put(KIND, key, encode_entry(user, sub))
        self.metrics.web_push_subscriptions.labels("renewed" if known else "added").inc()
        return sub

    async def unsubscribe(self, user: str, endpoint: object) -> bool:
        """Forgets ``user``'s subscription at ``endpoint``; False when there was none."""
        if not isinstance(endpoint, str) or not endpoint:
            raise SubscriptionError("endpoint must be a URL")
        key = entry_key(user, endpoint)
        if self.store.get(KIND, key) is None:
            return False
        await self.store.put(KIND, key, None)
        self.metrics.web_push_subscriptions.labels("removed").inc()
        return True

    # ------------------------------------------------------------------ sending
    def on_publication(
        self, channel: str, users: Iterable[str], offset: int, data: bytes, timestamp: float
    ) -> int:
        """Queues a message to each subscription of each user of ``users`` that is offline
        and whose sender is this worker; returns how many were queued. Cheap for users
        without subscriptions (a dictionary look-up each)."""
        if not self.live:
            return 0
        queued = 0
        plaintext: bytes | None = None
        workers: Sequence[str] | None = None
        for user in users:
            subs = self.subscriptions(user)
            if not subs or self.online.online(user):
                continue
            if workers is None:
                workers = self._workers()
            if not workers or owner(user, workers) != self.worker:
                continue
            if plaintext is None:
                plaintext, notice = payload(channel, offset, data)
                if notice:
                    self.metrics.web_push.labels("notice").inc()
            expires_at = timestamp + self.settings.ttl
            for key, sub in subs:
                queued += self.sender.submit(PushJob(key, sub, plaintext, expires_at))
        return queued
