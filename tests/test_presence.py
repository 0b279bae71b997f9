"""The cluster presence view: local entries, merged deltas and snapshots, expiry."""

from __future__ import annotations

import pytest

from tidings.clientinfo import ClientInfo
from tidings.control_messages import (
    Bye,
    Delta,
    Hello,
    Snapshot,
    UserDelta,
)
from tidings.presence import Change, Presence, UserChange

A1 = ClientInfo("alice", "c-a1", b'{"name":"Alice"}')
A2 = ClientInfo("alice", "c-a2")
B1 = ClientInfo("bob", "c-b1", None, b'{"role":"viewer"}')
ANON = ClientInfo("", "c-anon")


@pytest.fixture
def view() -> Presence:
    return Presence(ttl=15.0)


class TestLocal:
    def test_add_remove(self, view: Presence) -> None:
        assert view.add_local("room:1", A1)
        assert not view.add_local("room:1", A1)
        assert view.add_local("room:1", B1)
        assert view.members("room:1") == {"c-a1": A1, "c-b1": B1}
        assert view.remove_local("room:1", "c-a1") == A1
        assert view.remove_local("room:1", "c-a1") is None
        assert view.remove_local("room:2", "c-a1") is None
        assert view.local_channels() == {"room:1": (B1,)}
        view.remove_local("room:1", "c-b1")
        assert view.local_channels() == {}
        assert list(view.channels()) == []

    def test_stats_count_distinct_users(self, view: Presence) -> None:
        for info in (A1, A2, B1, ANON):
            view.add_local("room:1", info)
        assert view.stats("room:1") == (4, 3)
        assert view.stats("room:2") == (0, 0)


class TestRemote:
    def test_join_and_leave_of_another_worker(self, view: Presence) -> None:
        assert view.apply(Delta("w2", 1, "join", "room:1", B1), 0.0) == [
            Change("join", "room:1", B1)
        ]
        # A repeated join (same client) changes nothing.
        assert view.apply(Delta("w2", 2, "join", "room:1", B1), 0.0) == []
        view.add_local("room:1", A1)
        assert view.members("room:1") == {"c-a1": A1, "c-b1": B1}
        assert view.apply(Delta("w2", 3, "leave", "room:1", B1), 0.0) == [
            Change("leave", "room:1", B1)
        ]
        assert view.apply(Delta("w2", 4, "leave", "room:1", B1), 0.0) == []
        assert view.members("room:1") == {"c-a1": A1}

    def test_old_messages_are_ignored(self, view: Presence) -> None:
        view.apply(Delta("w2", 5, "join", "room:1", B1), 0.0)
        assert view.apply(Delta("w2", 4, "leave", "room:1", B1), 0.0) == []
        assert view.apply(Snapshot("w2", 3, {}), 0.0) == []
        assert "c-b1" in view.members("room:1")

    def test_snapshot_replaces_and_reports_the_difference(self, view: Presence) -> None:
        view.apply(Delta("w2", 1, "join", "room:1", B1), 0.0)
        view.apply(Delta("w2", 2, "join", "room:2", A2), 0.0)
        # The leave of A2 and the join of ANON were lost; the heartbeat repairs both.
        changes = view.apply(Snapshot("w2", 9, {"room:1": (B1, ANON), "room:3": ()}), 1.0)
        assert sorted(changes, key=lambda c: c.kind) == [
            Change("join", "room:1", ANON),
            Change("leave", "room:2", A2),
        ]
        assert view.members("room:1") == {"c-b1": B1, "c-anon": ANON}
        assert view.members("room:2") == {}
        assert sorted(view.channels()) == ["room:1"]

    def test_silent_worker_expires_after_the_ttl(self, view: Presence) -> None:
        view.apply(Snapshot("w2", 1, {"room:1": (B1,)}), 100.0)
        view.apply(Snapshot("w3", 1, {"room:1": (A2,)}), 100.0)
        view.apply(Snapshot("w3", 2, {"room:1": (A2,)}), 110.0)  # w3 keeps beating
        assert view.expire(114.9) == []
        assert view.expire(115.0) == [Change("leave", "room:1", B1)]
        assert view.members("room:1") == {"c-a2": A2}
        assert view.workers == 1
        # A worker heard from again after its expiry comes back whole, as joins.
        assert view.apply(Snapshot("w2", 2, {"room:1": (B1,)}), 116.0) == [
            Change("join", "room:1", B1)
        ]

    def test_bye_forgets_at_once(self, view: Presence) -> None:
        view.apply(Snapshot("w2", 1, {"room:1": (B1,), "room:2": (A2,)}), 0.0)
        assert sorted(c.channel for c in view.apply(Bye("w2"), 1.0)) == ["room:1", "room:2"]
        assert view.workers == 0
        assert view.apply(Bye("w2"), 1.0) == []

    def test_nodes_are_the_live_workers_last_figures(self, view: Presence) -> None:
        view.apply(Snapshot("w2", 1, {}, {"name": "w2", "num_clients": 1}), 0.0)
        view.apply(Snapshot("w3", 1, {}), 0.0)  # an older worker that sends no figures
        view.apply(Snapshot("w2", 2, {}, {"name": "w2", "num_clients": 5}), 1.0)
        view.apply(Snapshot("w2", 1, {}, {"name": "w2", "num_clients": 0}), 2.0)  # stale
        assert view.nodes() == [{"name": "w2", "num_clients": 5}]
        view.apply(Snapshot("w3", 2, {}, {"name": "w3"}), 3.0)
        assert view.nodes() == [{"name": "w2", "num_clients": 5}, {"name": "w3"}]
        view.apply(Bye("w3"), 4.0)
        assert view.expire(17.0) == []  # w2 was last heard from at 2.0 (the stale one)
        assert view.nodes() == []

    def test_hello_counts_as_life(self, view: Presence) -> None:
        view.apply(Snapshot("w2", 1, {"room:1": (B1,)}), 0.0)
        view.apply(Hello("w2"), 10.0)
        assert view.expire(20.0) == []
        assert view.expire(25.0) == [Change("leave", "room:1", B1)]


class TestUsers:
    """User presence: who is connected anywhere, and when that changes."""

    def test_local_stays_are_numbered_and_change_once(self) -> None:
        view = Presence(15.0, "w1")
        first = view.add_local_user("alice")
        assert first >= 1 and view.add_local_user("alice") == 0
        assert view.online("alice") and view.local_users() == {"alice": first}
        assert view.user_changes() == [UserChange("online", "alice", "w1", first)]
        assert view.user_changes() == []
        assert view.remove_local_user("alice") == first
        assert view.remove_local_user("alice") == 0
        assert view.user_changes() == [UserChange("offline", "alice", "w1", first, "disconnect")]
        assert not view.online("alice")
        assert view.add_local_user("alice") > first  # a new stay, a new number

    def test_one_online_and_one_offline_for_tabs_on_several_workers(self) -> None:
        view = Presence(15.0, "w1")
        since = view.add_local_user("alice")
        view.apply(UserDelta("w2", 1, "online", "alice", 7), 0.0)
        view.apply(Snapshot("w3", 1, users={"alice": 2}), 0.0)
        assert view.user_changes() == [UserChange("online", "alice", "w1", since)]
        view.remove_local_user("alice")
        view.apply(UserDelta("w2", 2, "offline", "alice", 7), 1.0)
        assert view.user_changes() == []  # still on w3
        view.apply(Snapshot("w3", 2, users={}), 2.0)
        assert view.user_changes() == [UserChange("offline", "alice", "w3", 2, "disconnect")]
        assert list(view.online_users()) == []

    def test_late_and_stale_messages_change_nothing(self) -> None:
        view = Presence(15.0, "w1")
        view.apply(UserDelta("w2", 5, "online", "bob", 3), 0.0)
        view.apply(UserDelta("w2", 4, "offline", "bob", 3), 0.0)  # older than seq 5
        view.apply(UserDelta("w2", 6, "offline", "bob", 1), 0.0)  # an earlier stay
        view.apply(UserDelta("w2", 7, "online", "bob", 3), 0.0)  # told twice
        assert view.user_changes() == [UserChange("online", "bob", "w2", 3)]
        assert view.online("bob")

    def test_a_snapshot_repairs_lost_deltas(self) -> None:
        view = Presence(15.0, "w1")
        view.apply(Snapshot("w2", 1, users={"bob": 1}), 0.0)
        # bob's offline (stay 1) and online (stay 4) were lost; carol arrived
        view.apply(Snapshot("w2", 9, users={"bob": 4, "carol": 5}), 5.0)
        assert view.user_changes() == [
            UserChange("online", "bob", "w2", 1),
            UserChange("offline", "bob", "w2", 1, "disconnect"),
            UserChange("online", "bob", "w2", 4),
            UserChange("online", "carol", "w2", 5),
        ]
        # a lost offline, then an online of a new stay: the old stay ends first
        view.apply(UserDelta("w2", 10, "online", "carol", 8), 6.0)
        assert view.user_changes() == [
            UserChange("offline", "carol", "w2", 5, "disconnect"),
            UserChange("online", "carol", "w2", 8),
        ]

    def test_a_silent_worker_takes_its_users_offline_a_goodbye_too(self) -> None:
        view = Presence(15.0, "w1")
        view.add_local_user("alice")
        view.apply(Snapshot("w2", 1, users={"alice": 1, "bob": 2}), 100.0)
        view.apply(Snapshot("w3", 1, users={"carol": 1}), 100.0)
        view.user_changes()
        view.apply(Bye("w3"), 101.0)
        assert view.user_changes() == [UserChange("offline", "carol", "w3", 1, "disconnect")]
        view.expire(114.9)
        assert view.online("bob")
        view.expire(115.0)
        assert view.user_changes() == [UserChange("offline", "bob", "w2", 2, "expired")]
        assert view.online("alice")  # still here on w1

    def test_electors_are_the_settled_live_workers(self) -> None:
        view = Presence(15.0, "w1", started=50.0, settle_at=15.0)
        view.apply(Hello("w2"), 1.0)
        view.apply(Snapshot("w3", 1, started=10.0, settled=True), 2.0)
        view.apply(Snapshot("w4", 1, started=5.0, settled=False), 3.0)
        assert list(view.electors(14.0)) == [(10.0, "w3", 2.0)]
        assert list(view.electors(15.0)) == [(50.0, "w1", 15.0), (10.0, "w3", 2.0)]
