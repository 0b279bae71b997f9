"""The push feed on its own: the users a channel names, and the senders of a worker alone
(the senders of a cluster: tests/test_node.py)."""

from __future__ import annotations

from typing import Any

from tidings.config import WebPushSettings
from tidings.log.memory import MemoryLedger
from tidings.metrics import Metrics
from tidings.presence import Presence
from tidings.publication import Publication
from tidings.push_feed import PushFeed


class Service:
    """Records what Web Push is handed."""

    def __init__(self) -> None:
        self.handed: list[tuple[Any, ...]] = []

    def on_publication(
        self, channel: str, users: tuple[str, ...], offset: int, data: bytes, timestamp: float
    ) -> None:
        self.handed.append((channel, users, offset))


def feed() -> tuple[PushFeed, Service]:
    made = PushFeed(
        WebPushSettings(),
        MemoryLedger(),
        Metrics(),
        Presence(3.0, "w1"),
        "w1",
        clock=lambda: 1000.0,
        monotonic=lambda: 0.0,
    )
    assert made.service is None  # [web_push] is not enabled
    service = Service()
    made.service = service  # type: ignore[assignment]
    return made, service


def test_a_publication_goes_to_the_users_its_channel_names() -> None:
    made, service = feed()
    made.push(Publication("inbox:x#bob,alice", 7, b"{}", 0.0))
    made.push(Publication("inbox:x#bob,alice", 8, b"{}", 0.0))
    made.push(Publication("news", 9, b"{}", 0.0))
    assert service.handed == [
        ("inbox:x#bob,alice", ("alice", "bob"), 7),
        ("inbox:x#bob,alice", ("alice", "bob"), 8),
    ]


def test_a_worker_alone_sends_itself() -> None:
    made, _ = feed()
    assert made.senders() == ["w1"]
