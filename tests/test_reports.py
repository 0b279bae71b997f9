"""Reports on their own: the envelope of an event, and users online and offline from a
worker alone (the election among several: tests/test_lifecycle.py)."""

from __future__ import annotations

from tidings.clientinfo import ClientInfo
from tidings.events import SUBSCRIBED, USER_OFFLINE, USER_ONLINE, MemoryOutbox
from tidings.lifecycle import Lifecycle
from tidings.metrics import Metrics
from tidings.presence import Presence
from tidings.reports import Reports


def reports(outbox: MemoryOutbox | None) -> tuple[Reports, Presence]:
    view = Presence(3.0, "w1", started=1.0)
    made = Reports(
        outbox,
        "app",
        "w1",
        view,
        Lifecycle("w1", window=5.0, margin=1.0),
        Metrics(),
        clock=lambda: 1000.0,
        monotonic=lambda: 0.0,
    )
    return made, view


def test_an_event_gets_its_envelope_and_a_routing_key_under_the_prefix() -> None:
    outbox = MemoryOutbox()
    made, _ = reports(outbox)
    made.emit("receipt.read", {"user": "alice", "node": "forged"}, id="r-1")
    made.subscription(SUBSCRIBED, "room:1", ClientInfo("alice", "c-1"))
    (key, event), (sub_key, sub) = outbox.events
    assert key == "app.receipt.read"
    assert event == {
        "type": "receipt.read",
        "id": "r-1",
        "user": "alice",
        "node": "w1",
        "time": 1000.0,
    }
    assert sub_key == "app." + SUBSCRIBED and sub["channel"] == "room:1" and sub["client"] == "c-1"


def test_a_worker_alone_leads_and_reports_its_users() -> None:
    outbox = MemoryOutbox()
    made, view = reports(outbox)
    view.add_local_user("alice")
    made.users()
    view.remove_local_user("alice")
    made.users()
    assert [e["type"] for e in outbox.of_type(USER_ONLINE) + outbox.of_type(USER_OFFLINE)] == [
        USER_ONLINE,
        USER_OFFLINE,
    ]
    assert made.lifecycle.leading


def test_no_outbox_sends_nothing() -> None:
    made, view = reports(None)
    made.emit("receipt.read", {})
    view.add_local_user("alice")
    made.users()
