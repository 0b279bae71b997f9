"""The schema of events for the application, and the in-memory outbox."""

from __future__ import annotations

import orjson

from tidings.events import (
    SUBSCRIBED,
    USER_OFFLINE,
    USER_ONLINE,
    MemoryOutbox,
    event_id,
    routing_key,
    subscription_event,
    user_event,
)


def test_routing_keys_take_the_prefix() -> None:
    assert routing_key("tidings", USER_ONLINE) == "tidings.user.online"
    assert routing_key("shop.rt", SUBSCRIBED) == "shop.rt.subscription.subscribed"
    assert routing_key("", USER_OFFLINE) == "user.offline"


def test_event_ids_are_stable_and_tell_parts_apart() -> None:
    assert event_id("user.online", "alice", "w1", "3") == event_id(
        "user.online", "alice", "w1", "3"
    )
    assert event_id("user.online", "alice", "w1", "3") != event_id(
        "user.offline", "alice", "w1", "3"
    )
    # Joining the parts with a separator that user names cannot fake.
    assert event_id("a", "bc") != event_id("ab", "c")
    assert len(event_id("x")) == 24


def test_user_event_shape() -> None:
    online = user_event(USER_ONLINE, id="i1", user="alice", node="w1", time=1700000000.12345)
    assert orjson.loads(orjson.dumps(online)) == {
        "type": "user.online",
        "id": "i1",
        "user": "alice",
        "node": "w1",
        "time": 1700000000.123,
    }
    offline = user_event(USER_OFFLINE, id="i2", user="a", node="w", time=1.0, reason="expired")
    assert offline["reason"] == "expired"


def test_subscription_event_shape() -> None:
    event = subscription_event(
        SUBSCRIBED, id="i", user="alice", client="c1", channel="room:1", node="w1", time=2.5
    )
    assert event == {
        "type": "subscription.subscribed",
        "id": "i",
        "user": "alice",
        "client": "c1",
        "channel": "room:1",
        "node": "w1",
        "time": 2.5,
    }


def test_memory_outbox_keeps_the_last_events_and_counts_the_others() -> None:
    outbox = MemoryOutbox(size=2)
    for i in range(3):
        outbox.emit("k", {"type": "t", "i": i})
    assert [e["i"] for _, e in outbox.events] == [1, 2]
    assert outbox.dropped == 1
    assert outbox.of_type("t") == [{"type": "t", "i": 1}, {"type": "t", "i": 2}]
