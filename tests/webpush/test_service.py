"""Web Push end to end against the test push service: encryption, VAPID, headers, the
offline decision, retries (``Retry-After``, backoff, bounds), gone subscriptions, the
queue's bound and which worker sends."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.integration.live import scaled
from tests.webpush.pushservice import Browser, PushService, check_vapid
from tests.webpush.store import DictStore
from tidings.config import WebPushSettings
from tidings.metrics import Metrics
from tidings.webpush.message import MAX_PAYLOAD
from tidings.webpush.service import WebPush, owner
from tidings.webpush.subscription import KIND, encode_entry, entry_key, parse_subscription
from tidings.webpush.vapid import generate_key

PRIVATE, PUBLIC = generate_key()
SUBJECT = "mailto:ops@example.com"


class Online:
    def __init__(self, *users: str) -> None:
        self.users = set(users)

    def online(self, user: str) -> bool:
        return user in self.users


def settings(**changes: Any) -> WebPushSettings:
    values: dict[str, Any] = {
        "vapid_private_key": PRIVATE,
        "vapid_subject": SUBJECT,
        "allow_private_endpoints": True,
        "retry_backoff": 0.05,
        "ttl": 600.0,
        "urgency": "high",
    }
    return WebPushSettings(**(values | changes))


@pytest.fixture
async def service() -> AsyncIterator[PushService]:
    push = await PushService().start()
    yield push
    await push.stop()


async def started(**changes: Any) -> tuple[WebPush, DictStore, Metrics, Online]:
    store, metrics, online = DictStore(), Metrics(), Online()
    wp = WebPush(settings(**changes), store, metrics, online, lambda: ["w1"], "w1")
    await wp.start()
    return wp, store, metrics, online


def count(metrics: Metrics, result: str) -> float:
    return metrics.web_push.labels(result)._value.get()


async def until(predicate: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + scaled(seconds)
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def push_one(
    service: PushService,
    name: str,
    data: bytes = b"1",
    *,
    script: tuple[tuple[int, dict[str, str]] | int, ...] = (),
    result: str = "sent",
    timestamp: float | None = None,
    **changes: Any,
) -> tuple[Metrics, Browser, DictStore]:
    """Registers a browser of alice at endpoint ``name``, publishes ``data`` to her while
    she is offline, and waits until the push ends with ``result``."""
    wp, store, metrics, _ = await started(**changes)
    browser = Browser()
    try:
        await wp.subscribe("alice", browser.subscription(service.endpoint(name)))
        service.script(name, *script)
        stamp = time.time() if timestamp is None else timestamp
        wp.on_publication("user#alice", ["alice"], 9, data, stamp)
        await until(lambda: count(metrics, result) == 1)
    finally:
        await wp.close()
    return metrics, browser, store


async def test_offline_user_gets_an_encrypted_message_with_vapid(service: PushService) -> None:
    wp, store, metrics, _ = await started()
    browser = Browser()
    try:
        await wp.subscribe("alice", browser.subscription(service.endpoint("a")))
        sent_at = time.time()
        queued = wp.on_publication("user#alice", ["alice"], 42, b'{"kind":"paid"}', sent_at)
        assert queued == 1
        await until(lambda: count(metrics, "sent") == 1)
    finally:
        await wp.close()
    (request,) = service.at("a")
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert request.headers["Urgency"] == "high"
    assert 598 <= int(request.headers["TTL"]) <= 600
    claims = check_vapid(request, service.origin, wp.public_key, SUBJECT)
    assert claims["aud"] == service.origin
    message = orjson.loads(browser.decrypt(request.body))
    assert message == {"channel": "user#alice", "offset": 42, "data": {"kind": "paid"}}
    assert store.items(KIND)  # still registered


async def test_online_user_and_unknown_user_get_nothing(service: PushService) -> None:
    wp, _, _metrics, online = await started()
    online.users.add("alice")
    try:
        await wp.subscribe("alice", Browser().subscription(service.endpoint("a")))
        assert wp.on_publication("user#alice", ["alice"], 1, b"1", time.time()) == 0
        assert wp.on_publication("user#bob", ["bob"], 2, b"2", time.time()) == 0
        await asyncio.sleep(scaled(0.2))
    finally:
        await wp.close()
    assert service.received == []


async def test_every_browser_of_the_user_gets_it(service: PushService) -> None:
    wp, _, metrics, _ = await started()
    laptop, phone = Browser(), Browser()
    try:
        await wp.subscribe("alice", laptop.subscription(service.endpoint("laptop")))
        await wp.subscribe("alice", phone.subscription(service.endpoint("phone")))
        assert wp.on_publication("user#alice,bob", ["alice", "bob"], 7, b"[1]", time.time()) == 2
        await until(lambda: count(metrics, "sent") == 2)
    finally:
        await wp.close()
    assert orjson.loads(laptop.decrypt(service.at("laptop")[0].body))["data"] == [1]
    assert orjson.loads(phone.decrypt(service.at("phone")[0].body))["data"] == [1]


@pytest.mark.parametrize("status", [404, 410])
async def test_gone_subscription_is_dropped(service: PushService, status: int) -> None:
    wp, store, metrics, _ = await started()
    try:
        await wp.subscribe("alice", Browser().subscription(service.endpoint("old")))
        service.script("old", status)
        wp.on_publication("user#alice", ["alice"], 1, b"1", time.time())
        await until(lambda: count(metrics, "gone") == 1)
        assert list(store.items(KIND)) == []
        # Nothing left to push to.
        assert wp.on_publication("user#alice", ["alice"], 2, b"2", time.time()) == 0
    finally:
        await wp.close()
    assert len(service.at("old")) == 1


async def test_429_is_retried_after_retry_after(service: PushService) -> None:
    metrics, browser, _ = await push_one(
        service, "busy", b'"hi"', script=((429, {"Retry-After": "1"}),)
    )
    first, second = service.at("busy")
    assert second.at - first.at >= 1.0
    assert count(metrics, "retried") == 1
    assert orjson.loads(browser.decrypt(second.body))["data"] == "hi"


async def test_5xx_is_retried_with_backoff_and_bounded(service: PushService) -> None:
    wp, store, metrics, _ = await started(retries=3, retry_backoff=0.1)
    try:
        await wp.subscribe("alice", Browser().subscription(service.endpoint("down")))
        service.script("down", *[503] * 10)
        wp.on_publication("user#alice", ["alice"], 1, b"1", time.time())
        await until(lambda: count(metrics, "failed") == 1)
        await asyncio.sleep(scaled(0.5))
    finally:
        await wp.close()
    times = [r.at for r in service.at("down")]
    assert len(times) == 4  # the first attempt and 3 retries
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4], strict=True):
        assert gap >= expected * 0.95
    assert count(metrics, "retried") == 3
    assert store.items(KIND)  # a failing service does not drop the subscription


async def test_retry_after_beyond_the_longest_pause_ends_the_attempts(
    service: PushService,
) -> None:
    await push_one(
        service,
        "later",
        script=((429, {"Retry-After": "3600"}),),
        result="failed",
        max_retry_delay=2.0,
    )
    assert len(service.at("later")) == 1


async def test_an_unreachable_service_is_retried(service: PushService) -> None:
    wp, _, metrics, _ = await started(retries=1)
    await service.stop()
    try:
        await wp.subscribe("alice", Browser().subscription(service.endpoint("gone")))
        wp.on_publication("user#alice", ["alice"], 1, b"1", time.time())
        await until(lambda: count(metrics, "failed") == 1)
    finally:
        await wp.close()
    assert count(metrics, "retried") == 1


async def test_other_4xx_is_not_retried(service: PushService) -> None:
    await push_one(service, "bad", script=(400,), result="failed")
    assert len(service.at("bad")) == 1


async def test_a_large_publication_sends_a_notice(service: PushService) -> None:
    data = orjson.dumps("x" * MAX_PAYLOAD)
    metrics, browser, _ = await push_one(service, "a", data)
    (request,) = service.at("a")
    assert len(request.body) <= 4096
    assert orjson.loads(browser.decrypt(request.body)) == {
        "channel": "user#alice",
        "offset": 9,
        "truncated": True,
    }
    assert count(metrics, "notice") == 1


async def test_the_largest_payload_fits_one_record(service: PushService) -> None:
    envelope = len(b'{"channel":"user#alice","offset":9,"data":""}')
    data = orjson.dumps("y" * (MAX_PAYLOAD - envelope))
    _, browser, _ = await push_one(service, "a", data)
    (request,) = service.at("a")
    assert len(request.body) == 4096
    assert orjson.loads(browser.decrypt(request.body))["data"] == "y" * (MAX_PAYLOAD - envelope)


async def test_the_queue_is_bounded(service: PushService) -> None:
    store, metrics = DictStore(), Metrics()
    wp = WebPush(settings(queue_size=2), store, metrics, Online(), lambda: ["w1"], "w1")
    await wp.sender.start()  # not live: on_publication ignores records until start()
    assert wp.on_publication("user#alice", ["alice"], 1, b"1", time.time()) == 0
    wp.live = True
    try:
        for name in ("a", "b", "c"):
            await wp.subscribe("alice", Browser().subscription(service.endpoint(name)))
        service.script("a", (503, {"Retry-After": "0"}))
        assert wp.on_publication("user#alice", ["alice"], 1, b"1", time.time()) == 2
        assert count(metrics, "dropped") == 1
        await until(lambda: count(metrics, "sent") == 2)
        assert wp.sender.waiting == 0
    finally:
        await wp.close()


async def test_expired_messages_are_not_sent(service: PushService) -> None:
    await push_one(service, "a", result="expired", timestamp=time.time() - 61, ttl=60.0)
    assert service.received == []


async def test_exactly_one_worker_sends(service: PushService) -> None:
    workers = ["node-a", "node-b", "node-c"]
    store, metrics = DictStore(), Metrics()
    services = [
        WebPush(settings(), store, metrics, Online(), lambda: workers, me) for me in workers
    ]
    for wp in services:
        await wp.start()
    try:
        users = [f"user{i}" for i in range(30)]
        for user in users:
            await services[0].subscribe(user, Browser().subscription(service.endpoint(user)))
        for user in users:
            queued = [
                wp.on_publication(f"u#{user}", [user], 1, b"1", time.time()) for wp in services
            ]
            assert sorted(queued) == [0, 0, 1]
            assert queued.index(1) == workers.index(owner(user, workers))
        await until(lambda: count(metrics, "sent") == 30)
    finally:
        for wp in services:
            await wp.close()
    # The users spread over the workers.
    assert len({owner(u, workers) for u in users}) == 3


async def test_a_worker_not_among_the_senders_sends_nothing(service: PushService) -> None:
    store, metrics = DictStore(), Metrics()
    # A worker that has just started is not yet among the settled senders.
    wp = WebPush(settings(), store, metrics, Online(), lambda: ["node-a"], "node-new")
    await wp.start()
    try:
        await wp.subscribe("alice", Browser().subscription(service.endpoint("a")))
        assert wp.on_publication("u#alice", ["alice"], 1, b"1", time.time()) == 0
    finally:
        await wp.close()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_the_sender_refuses_non_public_hosts_it_was_given(
    service: PushService, host: str
) -> None:
    """A stored subscription whose host now resolves to (or is) a loopback address, as
    after DNS rebinding: the request is never made, nor retried."""
    wp, store, metrics, _ = await started(allow_private_endpoints=False)
    port = service.origin.rsplit(":", 1)[1]
    browser = Browser()
    sub = parse_subscription(
        browser.subscription(f"https://{host}:{port}/push/a"), allow_private=True
    )
    await store.put(KIND, entry_key("alice", sub.endpoint), encode_entry("alice", sub))
    try:
        assert wp.on_publication("user#alice", ["alice"], 1, b"1", time.time()) == 1
        await until(lambda: count(metrics, "refused") == 1)
    finally:
        await wp.close()
    assert count(metrics, "retried") == 0
    assert service.received == []
