"""The cluster presence view: local entries, merged deltas and snapshots, expiry."""

from __future__ import annotations

import orjson
import pytest

from tidings.presence import (
    Bye,
    Change,
    ClientInfo,
    Delta,
    Hello,
    Presence,
    Snapshot,
    decode_message,
    encode_message,
)

A1 = ClientInfo("alice", "c-a1", b'{"name":"Alice"}')
A2 = ClientInfo("alice", "c-a2")
B1 = ClientInfo("bob", "c-b1", None, b'{"role":"viewer"}')
ANON = ClientInfo("", "c-anon")


@pytest.fixture
def view() -> Presence:
    return Presence(ttl=15.0)


class TestClientInfo:
    def test_json_has_info_fields_only_when_set(self) -> None:
        assert A2.to_json() == b'{"user":"alice","client":"c-a2"}'
        assert orjson.loads(A1.to_json()) == {
            "user": "alice",
            "client": "c-a1",
            "conn_info": {"name": "Alice"},
        }
        assert orjson.loads(orjson.dumps(B1.to_obj())) == orjson.loads(B1.to_json())

    def test_round_trip(self) -> None:
        for info in (A1, A2, B1, ANON):
            assert ClientInfo.from_obj(orjson.loads(info.to_json())) == info

    @pytest.mark.parametrize(
        "obj", [None, [], {"user": "a"}, {"user": 1, "client": "c"}, {"client": ""}]
    )
    def test_malformed(self, obj: object) -> None:
        with pytest.raises(ValueError):
            ClientInfo.from_obj(obj)


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


class TestMessages:
    @pytest.mark.parametrize(
        "message",
        [
            Delta("w1", 1, "join", "room:1", A1),
            Delta("w1", 2, "leave", "dialog#alice,bob", B1),
            Snapshot("w1", 3, {"room:1": (A1, ANON), "room:2": (B1,)}),
            Snapshot("w1", 4, {}),
            Snapshot("w1", 5, {"room:1": (B1,)}, {"name": "w1", "num_clients": 1, "ready": True}),
            Hello("w1"),
            Bye("w1"),
        ],
    )
    def test_round_trip(self, message: object) -> None:
        assert decode_message(encode_message(message)) == message  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[]",
            b'{"type":"hello"}',
            b'{"type":"join","worker":"w","seq":0,"channel":"c","info":{"client":"x"}}',
            b'{"type":"join","worker":"w","seq":true,"channel":"c","info":{"client":"x"}}',
            b'{"type":"join","worker":"w","seq":1,"channel":"","info":{"client":"x"}}',
            b'{"type":"join","worker":"w","seq":1,"channel":"c","info":{}}',
            b'{"type":"snapshot","worker":"w","seq":1,"channels":[]}',
            b'{"type":"snapshot","worker":"w","seq":1,"channels":{"c":{}}}',
            b'{"type":"snapshot","worker":"w","seq":1,"channels":{},"node":[1]}',
            b'{"type":"gossip","worker":"w","seq":1}',
        ],
    )
    def test_malformed(self, body: bytes) -> None:
        with pytest.raises(ValueError):
            decode_message(body)
