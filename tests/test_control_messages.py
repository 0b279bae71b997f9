"""The control messages between workers: every kind round-trips, malformed ones are refused."""

from __future__ import annotations

import pytest

from tidings.clientinfo import ClientInfo
from tidings.control_messages import (
    Bye,
    Delta,
    Hello,
    Snapshot,
    UserDelta,
    decode_message,
    encode_message,
)

A1 = ClientInfo("alice", "c-a1", b'{"name":"Alice"}')
A2 = ClientInfo("alice", "c-a2")
B1 = ClientInfo("bob", "c-b1", None, b'{"role":"viewer"}')
ANON = ClientInfo("", "c-anon")


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
            b'{"type":"online","worker":"w","seq":1,"user":"","since":1}',
            b'{"type":"online","worker":"w","seq":1,"user":"a","since":0}',
            b'{"type":"offline","worker":"w","seq":1,"user":"a","since":true}',
            b'{"type":"snapshot","worker":"w","seq":1,"channels":{},"users":{"a":"1"}}',
            b'{"type":"snapshot","worker":"w","seq":1,"channels":{},"started":"x"}',
            b'{"type":"snapshot","worker":"w","seq":1,"channels":{},"settled":1}',
        ],
    )
    def test_malformed(self, body: bytes) -> None:
        with pytest.raises(ValueError):
            decode_message(body)


class TestUserMessages:
    def test_messages_round_trip(self) -> None:
        for message in (
            UserDelta("w1", 3, "online", "alice", 2),
            UserDelta("w1", 4, "offline", "alice", 2),
            Snapshot("w1", 5, {}, None, {"alice": 2}, 1700000000.5, True),
        ):
            assert decode_message(encode_message(message)) == message

    def test_snapshots_of_older_workers_have_no_users(self) -> None:
        old = b'{"type":"snapshot","worker":"w9","seq":1,"channels":{}}'
        assert decode_message(old) == Snapshot("w9", 1, {})
