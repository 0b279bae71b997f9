"""Events back to the application on a real RabbitMQ: user online/offline once for the
cluster across two nodes, a killed node, a killed leader, a broker cut, and subscription
events. A test queue bound to the events exchange reads what the application would."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.log.live import EventTap as Tap
from tests.system.harness import (
    AMQP_URL,
    TIME_SCALE,
    AppNames,
    CutProxy,
    Node,
    start_node,
)
from tests.system.test_presence import Peer

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]

CONFIG = """
[[namespaces]]
name = "room"
lifecycle_events = true
"""
HEARTBEAT, TTL = 0.5, 1.5
#: Time for both nodes to settle (up for the TTL) and hear each other's heartbeats.
SETTLE = TTL + 2 * HEARTBEAT


def env(app_names: AppNames) -> dict[str, str]:
    return {
        "TIDINGS_CLUSTER_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        "TIDINGS_CLUSTER_PRESENCE_TTL": str(TTL),
        "TIDINGS_AMQP_EVENTS_EXCHANGE": app_names.events,
    }


def node(tmp_path: Path, app_names: AppNames, url: str = AMQP_URL) -> Node:
    args = ["--amqp-url", url, "--exchange", app_names.exchange, "--stream", app_names.stream]
    return start_node(tmp_path, *args, "--workers", "1", config=CONFIG, env=env(app_names))


class Tabs:
    """Opens a user's tab (a protocol client) on a node; every one is closed at the end."""

    def __init__(self) -> None:
        self._opened: list[Peer] = []

    async def open(self, at: Node, user: str) -> Peer:
        tab = Peer(at.ws_url, user)
        self._opened.append(tab)
        await tab.start()
        return tab

    async def close(self) -> None:
        for tab in self._opened:
            await tab.stop()


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, app_names: AppNames) -> AsyncIterator[tuple[Node, Node, Tabs]]:
    """Node A, then node B (A is older: A reports), both settled, and their tabs."""
    a = node(tmp_path, app_names)
    b = node(tmp_path, app_names)
    tabs = Tabs()
    try:
        await asyncio.sleep(SETTLE * TIME_SCALE)
        yield a, b, tabs
    finally:
        await tabs.close()
        a.stop()
        b.stop()


async def quiet(seconds: float) -> None:
    await asyncio.sleep(seconds * TIME_SCALE)


async def test_one_online_and_one_offline_for_tabs_on_two_nodes(
    tmp_path: Path, app_names: AppNames, tap: Tap
) -> None:
    async with two_nodes(tmp_path, app_names) as (a, b, tabs):
        # At once, on both nodes.
        tab_a, tab_b = await asyncio.gather(tabs.open(a, "alice"), tabs.open(b, "alice"))
        await tap.until("user.online", "alice")
        await quiet(2 * HEARTBEAT + 0.5)  # heartbeats carry both tabs: still one
        (online,) = tap.of("user.online", "alice")
        assert online["node"] and online["id"]
        await tab_a.stop()
        await quiet(2 * HEARTBEAT + 0.5)
        assert tap.of("user.offline", "alice") == []  # the tab on B is open
        closed = time.monotonic()
        await tab_b.stop()  # the last tab, on the node that does not report
        came = await tap.until("user.offline", "alice")
        took = came - closed
        # One broker hop to the reporting node, one to the exchange: well under a
        # heartbeat (the bound if the announcement were lost).
        print(f"user.offline {took:.3f}s after the last tab closed")
        assert took < HEARTBEAT + 0.5 * TIME_SCALE, took
        await quiet(2 * HEARTBEAT + 0.5)
        (offline,) = tap.of("user.offline", "alice")
        assert offline["reason"] == "disconnect" and offline["id"] != online["id"]
        assert offline["time"] >= online["time"]


async def test_a_killed_nodes_users_go_offline_after_the_ttl(
    tmp_path: Path, app_names: AppNames, tap: Tap
) -> None:
    async with two_nodes(tmp_path, app_names) as (a, b, tabs):
        await tabs.open(a, "alice")
        await tabs.open(b, "bob")
        await tap.until("user.online", "bob")
        await quiet(2 * HEARTBEAT)
        killed = time.monotonic()
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)
        came = await tap.until("user.offline", "bob", within=(TTL + HEARTBEAT) * 3)
        took = came - killed
        print(f"user.offline {took:.3f}s after SIGKILL (TTL {TTL}s, heartbeat {HEARTBEAT}s)")
        assert TTL - HEARTBEAT <= took <= TTL + HEARTBEAT + 1.0 * TIME_SCALE, took
        (offline,) = tap.of("user.offline", "bob")
        assert offline["reason"] == "expired"
        await quiet(HEARTBEAT * 2)
        assert tap.of("user.offline", "alice") == [] and len(tap.of("user.offline")) == 1


async def test_the_killed_leaders_users_are_reported_by_the_next(
    tmp_path: Path, app_names: AppNames, tap: Tap
) -> None:
    async with two_nodes(tmp_path, app_names) as (a, b, tabs):
        await tabs.open(a, "alice")
        await tabs.open(b, "bob")
        await tap.until("user.online", "alice")
        await tap.until("user.online", "bob")
        # Longer ago than the new leader replays (the old one's last heartbeat, less
        # one heartbeat), so that bob's online is not sent again.
        await quiet(4 * HEARTBEAT)
        a.proc.send_signal(signal.SIGKILL)  # the reporting node
        a.proc.wait(10)
        carol = await tabs.open(b, "carol")  # comes and goes while nobody reports
        await carol.stop()
        await tap.until("user.offline", "alice", within=(TTL + HEARTBEAT) * 3)
        await tap.until("user.offline", "carol")
        await quiet(2 * HEARTBEAT)
        assert len(tap.of("user.online", "carol")) == 1
        assert len(tap.of("user.offline", "carol")) == 1
        assert tap.of("user.offline", "alice")[0]["reason"] == "expired"
        assert tap.of("user.offline", "bob") == []
        # bob's online, reported by the old leader well before its death, is not
        # replayed by the new one
        assert len(tap.of("user.online", "bob")) == 1


async def test_events_due_during_a_broker_cut_arrive_after_it_in_order(
    tmp_path: Path, app_names: AppNames, tap: Tap
) -> None:
    proxy = CutProxy()
    await proxy.start()
    one = await asyncio.to_thread(node, tmp_path, app_names, proxy.url)
    try:
        await quiet(SETTLE)
        proxy.refusing = True
        assert proxy.cut() > 0
        users = [f"user{i}" for i in range(8)]
        for user in users:  # due while the broker is away
            tab = Peer(one.ws_url, user)
            await tab.start()
            await tab.call("subscribe", {"channel": "room:lobby"})
            await tab.stop()
        await quiet(1.0)
        assert tap.events == []
        proxy.refusing = False
        await proxy.linked()
        deadline = time.monotonic() + 30 * TIME_SCALE
        while len({e["id"] for e in tap.events}) < 4 * len(users):
            assert time.monotonic() < deadline, [e["type"] for e in tap.events]
            await asyncio.sleep(0.05)
    finally:
        one.stop()
        await proxy.stop()
    # A batch whose confirms were lost with the link is sent again: keep first arrivals.
    seen: set[str] = set()
    first = []
    for key, e in zip(tap.keys, tap.events, strict=True):
        if e["id"] not in seen:
            seen.add(e["id"])
            first.append((key, e))
    expected = [
        (f"tidings.{kind}", user)
        for user in users
        for kind in (
            "user.online",
            "subscription.subscribed",
            "subscription.unsubscribed",
            "user.offline",
        )
    ]
    assert [(key, e["user"]) for key, e in first] == expected
    subscribed = next(e for _, e in first if e["type"] == "subscription.subscribed")
    assert subscribed["channel"] == "room:lobby" and subscribed["client"]
    assert subscribed["node"] == first[0][1]["node"]


async def test_nodes_that_stop_cleanly_report_their_users_offline(
    tmp_path: Path, app_names: AppNames, tap: Tap
) -> None:
    async with two_nodes(tmp_path, app_names) as (a, b, tabs):
        await tabs.open(a, "alice")
        await tabs.open(b, "bob")
        await tap.until("user.online", "bob")
        await asyncio.to_thread(b.stop)  # SIGTERM: bob is told to go elsewhere
        await tap.until("user.offline", "bob")
        await quiet(2 * HEARTBEAT)
        (offline,) = tap.of("user.offline", "bob")  # the goodbye adds none
        assert offline["reason"] == "disconnect"
        await asyncio.to_thread(a.stop)  # the reporting node, the last one
        await tap.until("user.offline", "alice")
        assert tap.of("user.offline", "alice")[0]["reason"] == "disconnect"
