"""Sending push messages: a bounded queue, a few requests in flight, retries that honour
``Retry-After``, and subscriptions the push service says are gone dropped from the ledger.

Nothing here blocks the node: :meth:`Sender.submit` queues or refuses at once, and each
request runs in one of ``web_push.concurrency`` tasks over one aiohttp session.

What each answer of the push service means (RFC 8030 §5, §6.2, §8.3):

=================  ================================================================
2xx                delivered to the push service (``sent``)
404, 410           the subscription has expired or was removed: dropped (``gone``)
429, 5xx, no       tried again after ``Retry-After`` (seconds or an HTTP date) or,
answer, timeout    without one, ``retry_backoff`` doubled at each retry, at most
                   ``web_push.retries`` times, never waiting over ``max_retry_delay``
                   nor past the message's TTL (``retried``, then ``failed`` or
                   ``expired`` when the attempts end)
other 4xx          not retried (``failed``): the request itself is wrong
not public         the host resolved to a non-public address: not sent (``refused``)
=================  ================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import aiohttp

from tidings.config import WebPushSettings
from tidings.metrics import Metrics
from tidings.webpush.address import ForbiddenAddress, GuardedResolver, is_public
from tidings.webpush.message import build_request
from tidings.webpush.subscription import KIND, PushSubscription
from tidings.webpush.vapid import VapidSigner

__all__ = ["PushJob", "Sender", "SubscriptionStore", "retry_after"]

log = logging.getLogger(__name__)


class SubscriptionStore(Protocol):
    """Where push subscriptions are kept, the same on every node: the ledger
    (:class:`tidings.ledger.Ledger`)."""

    def get(self, kind: str, key: str) -> bytes | None:
        """The value of ``key`` as applied here, or None."""

    def items(self, kind: str) -> Iterator[tuple[str, bytes]]:
        """Every ``(key, value)`` of ``kind`` applied here."""

    def on_change(self, callback: Callable[[str, str, bytes | None], None]) -> None:
        """Calls ``callback(kind, key, value)`` after each applied write that changed one."""

    async def put(self, kind: str, key: str, value: bytes | None) -> None:
        """Writes ``key`` (None deletes it) for every node; returns once applied here."""


@dataclass(frozen=True, slots=True)
class PushJob:
    """One message for one subscription."""

    #: The subscription's ledger key (dropped under it when gone).
    key: str
    subscription: PushSubscription
    plaintext: bytes
    #: Unix time at which the message's TTL ends (the publication's time plus the TTL).
    expires_at: float
    #: Requests already made for it.
    attempts: int = 0


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class Sender:
    """The queue of push messages and the tasks that send them."""

    def __init__(
        self,
        settings: WebPushSettings,
        signer: VapidSigner,
        store: SubscriptionStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._queue: asyncio.Queue[PushJob] = asyncio.Queue()
        #: Jobs queued or waiting for a retry: what ``queue_size`` bounds.
        self._waiting = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._session: aiohttp.ClientSession | None = None

    @property
    def waiting(self) -> int:
        """Messages queued or waiting for a retry."""
        return self._waiting

    def submit(self, job: PushJob) -> bool:
        """Queues ``job``; False (and counted ``dropped``) when the queue is full."""
        if self._waiting >= self.settings.queue_size:
            self._count("dropped")
            return False
        self._waiting += 1
        self.metrics.web_push_queue.set(self._waiting)
        self._queue.put_nowait(job)
        return True

    async def start(self) -> None:
        """Opens the HTTP session and starts the sending tasks."""
        guarded = not self.settings.allow_private_endpoints
        connector = aiohttp.TCPConnector(
            limit=self.settings.concurrency,
            resolver=GuardedResolver() if guarded else None,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout),
        )
        self._tasks = [
            asyncio.create_task(self._run(), name=f"web push sender {i}")
            for i in range(self.settings.concurrency)
        ]

    async def close(self) -> None:
        """Stops sending; what is still queued is lost (counted ``dropped``)."""
        for timer in self._timers:
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._waiting:
            self.metrics.web_push.labels("dropped").inc(self._waiting)
        self._tasks, self._timers, self._waiting = [], set(), 0
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                retry = await self._send(job)
            except Exception:  # a bug or a ledger failure must not end this sender
                log.exception("push to %s failed", job.subscription.audience)
                self._count("failed")
                retry = None
            if retry is None:
                self._waiting -= 1
                self.metrics.web_push_queue.set(self._waiting)
            else:
                # The job keeps its place in the bound while it waits.
                self._later(*retry)

    def _later(self, delay: float, job: PushJob) -> None:
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self._queue.put_nowait(job)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def _count(self, result: str) -> None:
        self.metrics.web_push.labels(result).inc()

    async def _send(self, job: PushJob) -> tuple[float, PushJob] | None:
        """Makes one request; returns the pause and the job to retry, or None when done."""
        assert self._session is not None
        sub = job.subscription
        now = self.clock()
        ttl = max(0, int(job.expires_at - now))
        if self._expired(job.expires_at, now):
            self._count("expired")
            return None
        if not self.settings.allow_private_endpoints and _literal_not_public(sub.host):
            # aiohttp does not ask the resolver about address literals.
            self._count("refused")
            return None
        request = build_request(
            sub,
            job.plaintext,
            ttl=ttl,
            urgency=self.settings.urgency,
            authorization=self.signer.authorization(sub.audience),
        )
        job = replace(job, attempts=job.attempts + 1)
        hint: str | None = None
        try:
            async with self._session.post(
                request.url, data=request.body, headers=request.headers, allow_redirects=False
            ) as response:
                status = response.status
                hint = response.headers.get("Retry-After")
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if _forbidden(exc):
                self._count("refused")
                log.warning("push endpoint %s refused: %s", sub.audience, exc)
                return None
            log.info("push to %s failed: %s", sub.audience, exc or type(exc).__name__)
            status = 0
        if 200 <= status < 300:
            self._count("sent")
            return None
        if status in (404, 410):
            self._count("gone")
            log.info("push subscription at %s is gone (%d); dropped", sub.audience, status)
            await self.store.put(KIND, job.key, None)
            return None
        if status != 0 and status != 429 and status < 500:
            self._count("failed")
            log.warning("push service %s refused a message: %d", sub.audience, status)
            return None
        return self._retry(job, retry_after(hint, now))

    def _retry(self, job: PushJob, hinted: float | None) -> tuple[float, PushJob] | None:
        settings = self.settings
        if job.attempts > settings.retries:
            self._count("failed")
            return None
        delay = hinted if hinted is not None else settings.retry_backoff * 2 ** (job.attempts - 1)
        if delay > settings.max_retry_delay:
            self._count("failed")
            return None
        if self._expired(job.expires_at, self.clock() + delay):
            self._count("expired")
            return None
        self._count("retried")
        return delay, job

    def _expired(self, expires_at: float, when: float) -> bool:
        # A TTL of 0 asks the push service to deliver now or never; tidings still tries.
        return self.settings.ttl > 0 and when > expires_at


def _forbidden(exc: BaseException) -> bool:
    """Whether ``exc`` is the guarded resolver's refusal (aiohttp wraps it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ForbiddenAddress):
            return True
        if isinstance(seen, aiohttp.ClientConnectorError) and isinstance(
            seen.os_error, ForbiddenAddress
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _literal_not_public(host: str) -> bool:
    try:
        return not is_public(host)
    except ValueError:  # a name, judged by the resolver
        return False
