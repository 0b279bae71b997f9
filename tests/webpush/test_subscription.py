"""What a page may register: https endpoints on public hosts, well-formed keys, a bounded
number per user (no requests into tidings' own network unless the setting allows it)."""

from __future__ import annotations

import orjson
import pytest

from tests.webpush.pushservice import Browser
from tests.webpush.store import DictStore
from tests.webpush.test_service import Online, settings
from tidings.metrics import Metrics
from tidings.webpush.address import is_public
from tidings.webpush.service import WebPush
from tidings.webpush.subscription import (
    KIND,
    SubscriptionError,
    decode_entry,
    encode_entry,
    entry_key,
    parse_subscription,
)
from tidings.webpush.vapid import b64url

FCM = "https://fcm.googleapis.com/fcm/send/abc:def"


def keys(**changes: str) -> dict[str, str]:
    browser = Browser()
    return {"p256dh": browser.p256dh, "auth": browser.auth} | changes


def test_a_browser_subscription_is_accepted() -> None:
    sub = parse_subscription({"endpoint": FCM, "keys": keys(), "expirationTime": None})
    assert sub.endpoint == FCM
    assert sub.audience == "https://fcm.googleapis.com"
    assert (sub.host, sub.port) == ("fcm.googleapis.com", 443)


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("http://fcm.googleapis.com/x", "https"),
        ("ftp://fcm.googleapis.com/x", "https"),
        ("https:///x", "host"),
        ("https://user:pw@fcm.googleapis.com/x", "user or password"),
        ("https://127.0.0.1/x", "not a public address"),
        ("https://10.1.2.3/x", "not a public address"),
        ("https://192.168.0.1/x", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://[::1]/x", "not a public address"),
        ("https://[fe80::1]/x", "not a public address"),
        ("https://[::ffff:10.0.0.1]/x", "not a public address"),
        ("https://0.0.0.0/x", "not a public address"),
        ("https://fcm.googleapis.com:99999/x", "valid URL"),
        ("https://fcm.googleapis.com/a b", "spaces"),
        ("https://fcm.googleapis.com/" + "a" * 2048, "2048"),
        ("", "URL"),
    ],
)
def test_bad_endpoints_are_refused(endpoint: str, reason: str) -> None:
    with pytest.raises(SubscriptionError, match=reason):
        parse_subscription({"endpoint": endpoint, "keys": keys()})


def test_the_setting_allows_plain_http_and_private_hosts() -> None:
    sub = parse_subscription(
        {"endpoint": "http://127.0.0.1:8080/push/1", "keys": keys()}, allow_private=True
    )
    assert sub.audience == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"p256dh": "not base64!"}, "keys.p256dh must be a base64url"),
        ({"p256dh": b64url(b"\x04" + b"\x01" * 63)}, "65 bytes"),
        ({"p256dh": b64url(b"\x04" + b"\x01" * 64)}, "P-256 curve"),
        ({"auth": b64url(b"\x00" * 15)}, "keys.auth must be 16 bytes"),
        ({"auth": ""}, "keys.auth must be a base64url"),
    ],
)
def test_malformed_keys_are_refused(changes: dict[str, str], reason: str) -> None:
    with pytest.raises(SubscriptionError, match=reason):
        parse_subscription({"endpoint": FCM, "keys": keys(**changes)})


@pytest.mark.parametrize(
    "obj", [None, [], "x", {"endpoint": FCM}, {"endpoint": FCM, "keys": []}, {"keys": keys()}]
)
def test_shapes_that_are_not_a_subscription_are_refused(obj: object) -> None:
    with pytest.raises(SubscriptionError):
        parse_subscription(obj)


def test_addresses() -> None:
    assert is_public("142.250.74.10")
    assert is_public("2a00:1450:4007:80e::200a")
    for address in (
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "100.64.0.1",
        "169.254.1.1",
        "224.0.0.1",
        "::1",
        "fc00::1",
        "fe80::1%eth0",
        "::ffff:127.0.0.1",
    ):
        assert not is_public(address), address


def test_entries_keep_the_user_and_fit_the_ledger() -> None:
    sub = parse_subscription({"endpoint": FCM, "keys": keys()})
    user = "ü" * 127
    key = entry_key(user, FCM)
    assert len(key.encode()) <= 255 and FCM not in key
    assert key != entry_key("bob", FCM)
    assert decode_entry(encode_entry(user, sub)) == (user, sub)
    for junk in (b"", b"[]", b'{"user": 1}', b'{"user": "a", "endpoint": "x"}'):
        assert decode_entry(junk) is None


def service(**changes: object) -> tuple[WebPush, DictStore]:
    store = DictStore()
    return WebPush(settings(**changes), store, Metrics(), Online(), lambda: [], "w"), store


async def test_a_host_that_resolves_to_loopback_is_refused() -> None:
    wp, store = service(allow_private_endpoints=False)
    sub = {"endpoint": "https://localhost/push/1", "keys": keys()}
    with pytest.raises(SubscriptionError, match="not a public address"):
        await wp.subscribe("alice", sub)
    with pytest.raises(SubscriptionError, match="does not resolve"):
        await wp.subscribe("alice", {"endpoint": "https://nowhere.invalid/p", "keys": keys()})
    assert store.entries == {}


async def test_subscriptions_are_bounded_per_user_and_renewable() -> None:
    wp, store = service(max_subscriptions_per_user=2)
    first = {"endpoint": "http://127.0.0.1:1/push/1", "keys": keys()}
    await wp.subscribe("alice", first)
    await wp.subscribe("alice", {"endpoint": "http://127.0.0.1:1/push/2", "keys": keys()})
    with pytest.raises(SubscriptionError, match="at most 2"):
        await wp.subscribe("alice", {"endpoint": "http://127.0.0.1:1/push/3", "keys": keys()})
    # The same endpoint again (new keys) replaces its entry; another user has their own.
    renewed = {"endpoint": first["endpoint"], "keys": keys()}
    await wp.subscribe("alice", renewed)
    await wp.subscribe("bob", {"endpoint": "http://127.0.0.1:1/push/3", "keys": keys()})
    assert len(wp.subscriptions("alice")) == 2
    stored = store.get(KIND, entry_key("alice", first["endpoint"]))
    assert stored is not None and orjson.loads(stored)["keys"] == renewed["keys"]
    assert await wp.unsubscribe("alice", first["endpoint"])
    assert not await wp.unsubscribe("alice", first["endpoint"])
    assert len(wp.subscriptions("alice")) == 1


async def test_anonymous_connections_cannot_register() -> None:
    wp, _ = service()
    with pytest.raises(SubscriptionError, match="user"):
        await wp.subscribe("", {"endpoint": "http://127.0.0.1:1/push/1", "keys": keys()})
