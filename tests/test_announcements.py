"""Announcements on their own: a fake control plane, an outbox in memory, no loop."""

from __future__ import annotations

from typing import Any

from tests.fakes import Sink
from tests.test_reports import reports
from tidings.announcements import Announcements
from tidings.clientinfo import ClientInfo
from tidings.config import ChannelOptions, NamespaceSettings, Settings
from tidings.events import SUBSCRIBED, UNSUBSCRIBED, MemoryOutbox
from tidings.metrics import Metrics
from tidings.presence import Presence

CONFIG = Settings(
    namespaces=[
        NamespaceSettings(name="room", presence=True, join_leave=True),
        NamespaceSettings(name="quiet", presence=True),
        NamespaceSettings(name="audit", lifecycle_events=True),
    ]
)
ALICE = ClientInfo("alice", "c-1")


class Control:
    """Records what would go to the other workers."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def announce(self, kind: str, channel: str, info: ClientInfo) -> None:
        self.sent.append((kind, channel, info.client))

    def announce_user(self, kind: str, user: str, since: int) -> None:
        self.sent.append((kind, user))


def announcements() -> tuple[Announcements, Control, MemoryOutbox, Presence]:
    control, outbox = Control(), MemoryOutbox()
    made_reports, view = reports(outbox)

    def options(channel: str) -> ChannelOptions | None:
        namespace, _, _ = channel.rpartition(":")
        return CONFIG.namespace(namespace)

    made = Announcements(view, control, made_reports, options, Metrics(), lambda: 0.0)
    return made, control, outbox, view


def test_a_join_and_a_leave_reach_the_listeners_and_the_other_workers() -> None:
    made, control, _, view = announcements()
    listener, joiner = Sink("listener"), Sink("joiner")
    made.track(listener, "room:1", ClientInfo("bob", "c-0"), True)
    made.track(joiner, "room:1", ALICE, False)
    assert [(e.kind, e.channel) for e in listener.events] == [("join", "room:1")] * 2
    assert joiner.events == []
    assert set(view.members("room:1")) == {"c-0", "c-1"}
    made.untrack(joiner, "room:1")
    assert [e.kind for e in listener.events] == ["join", "join", "leave"]
    assert control.sent == [
        ("join", "room:1", "c-0"),
        ("join", "room:1", "c-1"),
        ("leave", "room:1", "c-1"),
    ]
    assert set(view.members("room:1")) == {"c-0"}


def test_a_namespace_without_join_leave_is_in_presence_and_pushes_nothing() -> None:
    made, control, _, view = announcements()
    listener = Sink()
    made.track(listener, "quiet:1", ALICE, True)
    assert set(view.members("quiet:1")) == {"c-1"} and listener.events == []
    assert control.sent == [("join", "quiet:1", "c-1")]


def test_lifecycle_events_report_subscriptions_and_stay_out_of_presence() -> None:
    made, control, outbox, view = announcements()
    sub = Sink()
    made.track(sub, "audit:1", ALICE, True)
    made.untrack(sub, "audit:1")
    made.untrack(sub, "audit:1")  # a second time: nothing more
    assert [e["type"] for _, e in outbox.events] == [SUBSCRIBED, UNSUBSCRIBED]
    assert control.sent == [] and view.members("audit:1") == {}


def test_users_arriving_and_departing_are_announced() -> None:
    made, control, _, view = announcements()
    made.user_arrived("alice")
    assert view.online("alice")
    made.user_departed("alice")
    assert not view.online("alice")
    assert control.sent == [("online", "alice"), ("offline", "alice")]
