"""The hub: subscription bookkeeping, fan-out and the skip of duplicates after recovery."""

from __future__ import annotations

from tests.fakes import Sink
from tidings.history import History
from tidings.hub import Hub
from tidings.protocol.messages import RecoverPosition
from tidings.publication import Publication
from tidings.subscription import Recovery

NOW = 1_700_000_000.0
OPTS = {"size": 100, "ttl": 300.0, "now": NOW}


def pub(channel: str, offset: int) -> Publication:
    return Publication(channel, offset, b"%d" % offset, NOW)


def subscribe(
    hub: Hub, sink: Sink, channel: str, recover: RecoverPosition | None = None, head: int = 0
) -> Recovery | None:
    return hub.subscribe(sink, channel, recover, epoch="e", head=head, **OPTS)


def test_subscribe_unsubscribe_bookkeeping() -> None:
    hub = Hub(History())
    a, b = Sink("a"), Sink("b")
    assert subscribe(hub, a, "x") is None
    subscribe(hub, a, "x")  # twice is once
    subscribe(hub, b, "x")
    subscribe(hub, a, "y")
    assert hub.subscriptions == 3
    assert hub.subscribers("x") == 2 and hub.subscribers("y") == 1
    assert sorted(hub.channels()) == ["x", "y"]
    assert hub.unsubscribe(a, "x") is True
    assert hub.unsubscribe(a, "x") is False
    assert hub.unsubscribe(a, "zzz") is False
    assert hub.unsubscribe(a, "y") is True
    assert hub.subscriptions == 1 and sorted(hub.channels()) == ["x"]
    assert hub.subscribers("y") == 0
    assert hub.unsubscribe(b, "x") is True
    assert hub.subscriptions == 0 and list(hub.channels()) == []


def test_publish_fans_out_the_same_object() -> None:
    hub = Hub(History())
    a, b, c = Sink("a"), Sink("b"), Sink("c")
    subscribe(hub, a, "x")
    subscribe(hub, b, "x")
    subscribe(hub, c, "y")
    p = pub("x", 1)
    assert hub.publish(p, **OPTS) == 2
    assert a.pubs == [p] and b.pubs == [p] and c.pubs == []
    assert a.pubs[0] is b.pubs[0]


def test_publish_without_subscribers_still_keeps_history() -> None:
    hub = Hub(History())
    assert hub.publish(pub("x", 1), **OPTS) == 0
    window = hub.history.window("x")
    assert window is not None and window.offsets() == [1]


def test_subscribe_with_recovery_is_atomic_with_the_snapshot() -> None:
    hub = Hub(History())
    for o in (1, 2, 3):
        hub.publish(pub("x", o), **OPTS)
    a = Sink("a")
    r = subscribe(hub, a, "x", RecoverPosition(1, "e"), head=3)
    assert r is not None and r.recovered and [p.offset for p in r.publications] == [2, 3]
    hub.publish(pub("x", 4), **OPTS)
    assert [p.offset for p in a.pubs] == [4]


def test_failed_recovery_still_subscribes() -> None:
    hub = Hub(History())
    a = Sink("a")
    r = subscribe(hub, a, "x", RecoverPosition(1, "other"), head=3)
    assert r == Recovery(False)
    assert hub.subscribers("x") == 1


def test_client_ahead_skips_duplicates_then_resumes() -> None:
    hub = Hub(History())
    a, b = Sink("a"), Sink("b")
    subscribe(hub, b, "x")
    r = subscribe(hub, a, "x", RecoverPosition(7, "e"), head=3)
    assert r == Recovery(True, (), 7)
    for o in (5, 7, 8, 9):
        hub.publish(pub("x", o), **OPTS)
    assert [p.offset for p in a.pubs] == [8, 9]
    assert [p.offset for p in b.pubs] == [5, 7, 8, 9]
    assert hub._skips == {}  # cleared once passed


def test_publish_returns_the_count_delivered_with_skips() -> None:
    hub = Hub(History())
    a, b = Sink("a"), Sink("b")
    subscribe(hub, a, "x", RecoverPosition(5, ""), head=1)
    subscribe(hub, b, "x")
    assert hub.publish(pub("x", 4), **OPTS) == 1
    assert hub.publish(pub("x", 6), **OPTS) == 2


def test_unsubscribe_clears_a_pending_skip() -> None:
    hub = Hub(History())
    a = Sink("a")
    subscribe(hub, a, "x", RecoverPosition(9, "e"), head=1)
    hub.unsubscribe(a, "x")
    assert hub._skips == {}
    subscribe(hub, a, "x")
    hub.publish(pub("x", 2), **OPTS)
    assert [p.offset for p in a.pubs] == [2]


def test_skips_are_per_subscriber_and_channel() -> None:
    hub = Hub(History())
    a = Sink("a")
    subscribe(hub, a, "x", RecoverPosition(9, "e"), head=1)
    subscribe(hub, a, "y")
    hub.publish(pub("y", 2), **OPTS)
    hub.publish(pub("x", 3), **OPTS)
    assert [(p.channel, p.offset) for p in a.pubs] == [("y", 2)]
