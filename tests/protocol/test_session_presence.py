"""The session's presence, presence_stats, join/leave requests and client publish."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.fakes import T0, Client, FakeHost, settings, token
from tidings.clientinfo import ClientInfo
from tidings.codes import ErrorCode
from tidings.config import ClientSettings, NamespaceSettings
from tidings.protocol.calls import MAX_OPERATIONS_IN_FLIGHT
from tidings.protocol.operations import INTERNAL, PublishCall, Published, Rejected

NAMESPACES = [
    # presence for subscribers, join/leave on request
    NamespaceSettings(
        name="room",
        presence=True,
        join_leave=True,
        allow_presence_for_subscriber=True,
        allow_publish_for_subscriber=True,
    ),
    # join/leave pushed to everyone, presence open to any user, publish open to any user
    NamespaceSettings(
        name="lobby",
        presence=True,
        join_leave=True,
        force_push_join_leave=True,
        allow_presence_for_client=True,
        allow_publish_for_client=True,
    ),
    # anonymous subscribers too
    NamespaceSettings(
        name="open",
        allow_anonymous=True,
        presence=True,
        allow_presence_for_subscriber=True,
        allow_presence_for_anonymous=True,
        allow_publish_for_subscriber=True,
        allow_publish_for_anonymous=True,
    ),
    # join/leave on, but presence closed to clients: asking for pushes gets none
    NamespaceSettings(name="feed", join_leave=True),
    NamespaceSettings(name="quiet"),
]


@pytest.fixture
def host() -> FakeHost:
    return FakeHost(settings(namespaces=NAMESPACES), anonymous=True)


def connected(host: FakeHost, user: str | None = "alice", **claims: Any) -> Client:
    c = Client(host, name=user or "anon")
    c.connect(token(user, **claims) if user is not None else "")
    return c


def subscribe(c: Client, channel: str, cid: int = 2, **extra: Any) -> dict[str, Any]:
    (reply,) = c.send({"id": cid, "subscribe": {"channel": channel, **extra}})
    return reply


def err(code: ErrorCode, message: str = "") -> dict[str, Any]:
    return {"code": int(code), "message": message or code.message}


class TestPresence:
    def test_subscriber_sees_every_subscriber_with_info(self, host: FakeHost) -> None:
        alice = connected(host, info={"name": "Alice"})
        bob = connected(host, "bob")
        subscribe(alice, "room:1")
        subscribe(bob, "room:1")
        (reply,) = alice.send({"id": 3, "presence": {"channel": "room:1"}})
        assert reply == {
            "id": 3,
            "presence": {
                "presence": {
                    alice.session.client_id: {
                        "user": "alice",
                        "client": alice.session.client_id,
                        "conn_info": {"name": "Alice"},
                    },
                    bob.session.client_id: {"user": "bob", "client": bob.session.client_id},
                }
            },
        }

    def test_stats_before_and_after_a_leave(self, host: FakeHost) -> None:
        alice, alice2, bob = connected(host), connected(host), connected(host, "bob")
        for c in (alice, alice2, bob):
            subscribe(c, "room:1")
        stats = {"id": 4, "presence_stats": {"channel": "room:1"}}
        assert alice.send(stats) == [
            {"id": 4, "presence_stats": {"num_clients": 3, "num_users": 2}}
        ]
        bob.session.closed()
        alice2.send({"id": 5, "unsubscribe": {"channel": "room:1"}})
        assert alice.send(stats) == [
            {"id": 4, "presence_stats": {"num_clients": 1, "num_users": 1}}
        ]

    def test_not_subscribed_is_103_for_subscriber_only_namespaces(self, host: FakeHost) -> None:
        alice = connected(host)
        (reply,) = alice.send({"id": 3, "presence": {"channel": "room:1"}})
        assert reply == {"id": 3, "error": err(ErrorCode.PERMISSION_DENIED)}

    def test_for_client_needs_no_subscription(self, host: FakeHost) -> None:
        alice = connected(host)
        (reply,) = alice.send({"id": 3, "presence_stats": {"channel": "lobby:x"}})
        assert reply == {"id": 3, "presence_stats": {"num_clients": 0, "num_users": 0}}

    def test_anonymous_only_where_allowed(self, host: FakeHost) -> None:
        anon = connected(host, None)
        (reply,) = anon.send({"id": 3, "presence": {"channel": "lobby:x"}})
        assert reply == {"id": 3, "error": err(ErrorCode.PERMISSION_DENIED)}
        subscribe(anon, "open:x")
        (reply,) = anon.send({"id": 4, "presence_stats": {"channel": "open:x"}})
        assert reply == {"id": 4, "presence_stats": {"num_clients": 1, "num_users": 1}}

    def test_presence_off_is_108_and_unknown_namespace_102(self, host: FakeHost) -> None:
        alice = connected(host)
        subscribe(alice, "quiet:1")
        (off,) = alice.send({"id": 3, "presence": {"channel": "quiet:1"}})
        off_error = err(ErrorCode.NOT_AVAILABLE, "presence is off in this namespace")
        assert off == {"id": 3, "error": off_error}
        (unknown,) = alice.send({"id": 4, "presence": {"channel": "nowhere:1"}})
        assert unknown == {"id": 4, "error": err(ErrorCode.UNKNOWN_CHANNEL)}
        (bad,) = alice.send({"id": 5, "presence": {}})
        assert bad == {"id": 5, "error": err(ErrorCode.BAD_REQUEST, "channel is required")}


class TestJoinLeaveRequests:
    def tracked(self, host: FakeHost, c: Client, channel: str) -> tuple[ClientInfo, bool]:
        return host.tracked[channel][c.sink]

    def test_every_subscription_is_tracked_with_its_client_info(self, host: FakeHost) -> None:
        alice = connected(host, info={"n": 1})
        subscribe(alice, "room:1")
        info, push = self.tracked(host, alice, "room:1")
        assert info == ClientInfo("alice", alice.session.client_id, b'{"n":1}')
        assert push is False

    def test_a_subscription_token_s_info_is_the_channel_info(self, host: FakeHost) -> None:
        alice = connected(host, info={"n": 1})
        tok = token(channel="room:1", info={"role": "editor"})
        assert "error" not in subscribe(alice, "room:1", token=tok)
        subscribe(alice, "room:2", cid=3)
        me = alice.session.client_id
        on_1 = ClientInfo("alice", me, b'{"n":1}', b'{"role":"editor"}')
        assert self.tracked(host, alice, "room:1")[0] == on_1
        assert self.tracked(host, alice, "room:2")[0] == ClientInfo("alice", me, b'{"n":1}')
        # Its publications carry it too, on that channel only.
        alice.send({"id": 4, "publish": {"channel": "room:1", "data": 1}})
        alice.send({"id": 5, "publish": {"channel": "room:2", "data": 2}})
        assert [call.info for call in publishes(alice)] == [
            on_1.to_json(),
            ClientInfo("alice", me, b'{"n":1}').to_json(),
        ]
        # It belongs to that subscription: subscribed again without the token, it is gone.
        alice.send({"id": 6, "unsubscribe": {"channel": "room:1"}})
        subscribe(alice, "room:1", cid=7)
        assert self.tracked(host, alice, "room:1")[0] == ClientInfo("alice", me, b'{"n":1}')

    def test_asked_and_allowed(self, host: FakeHost) -> None:
        alice = connected(host)
        subscribe(alice, "room:1", join_leave=True)
        assert self.tracked(host, alice, "room:1")[1] is True

    def test_asked_without_presence_permission(self, host: FakeHost) -> None:
        alice = connected(host)
        subscribe(alice, "feed:1", join_leave=True)
        assert self.tracked(host, alice, "feed:1")[1] is False

    def test_asked_where_join_leave_is_off(self, host: FakeHost) -> None:
        alice = connected(host)
        subscribe(alice, "open:1", join_leave=True)
        assert self.tracked(host, alice, "open:1")[1] is False

    def test_forced_without_asking(self, host: FakeHost) -> None:
        alice = connected(host)
        subscribe(alice, "lobby:1")
        assert self.tracked(host, alice, "lobby:1")[1] is True

    def test_server_side_subscriptions_get_forced_pushes_only(self, host: FakeHost) -> None:
        alice = Client(host)
        alice.connect(token(channels=["lobby:1", "room:1"]))
        assert self.tracked(host, alice, "lobby:1")[1] is True
        assert self.tracked(host, alice, "room:1")[1] is False


def publishes(c: Client) -> list[PublishCall]:
    """The publications the session handed over (every operation must be one)."""
    operations = c.session.take_operations()
    assert all(isinstance(op, PublishCall) for op in operations), operations
    return operations  # type: ignore[return-value]


class TestPublish:
    def test_allowed_publish_becomes_an_operation_and_waits_for_the_log(
        self, host: FakeHost
    ) -> None:
        alice = connected(host, info={"n": 1})
        subscribe(alice, "room:1")
        out = alice.send({"id": 3, "publish": {"channel": "room:1", "data": {"text": "hi"}}})
        assert out == []  # no reply before the log took it
        (call,) = publishes(alice)
        assert (call.channel, call.data, call.command_id) == (
            "room:1",
            orjson.dumps({"text": "hi"}),
            3,
        )
        info = ClientInfo("alice", alice.session.client_id, b'{"n":1}')
        assert call.info == info.to_json()
        assert not call.holds  # later commands do not wait for the log
        assert publishes(alice) == []
        alice.session.complete(call, Published(), T0)
        assert alice.session.take_output() == [b'{"id":3,"publish":{}}']

    def test_a_failed_append_is_answered_with_its_error(self, host: FakeHost) -> None:
        alice = connected(host)
        alice.send({"id": 3, "publish": {"channel": "lobby:1", "data": 1}})
        (call,) = publishes(alice)
        alice.session.complete(call, Rejected(106, "too big"), T0)
        assert [orjson.loads(m) for m in alice.session.take_output()] == [
            {"id": 3, "error": {"code": 106, "message": "too big"}}
        ]
        alice.send({"id": 4, "publish": {"channel": "lobby:1", "data": 1}})
        (call,) = publishes(alice)
        alice.session.complete(call, INTERNAL, T0)
        (reply,) = [orjson.loads(m) for m in alice.session.take_output()]
        assert reply["error"]["code"] == 100 and reply["error"]["temporary"] is True

    def test_done_after_close_sends_nothing(self, host: FakeHost) -> None:
        alice = connected(host)
        alice.send({"id": 3, "publish": {"channel": "lobby:1", "data": 1}})
        (call,) = publishes(alice)
        alice.session.closed()
        alice.session.complete(call, Published(), T0)
        assert alice.session.take_output() == []

    @pytest.mark.parametrize(
        ("user", "channel", "subscribed", "allowed"),
        [
            ("alice", "room:1", False, False),  # subscriber-only, not subscribed
            ("alice", "room:1", True, True),
            ("alice", "lobby:1", False, True),  # for any client
            (None, "lobby:1", False, False),  # ... but not anonymous
            (None, "open:1", False, False),  # anonymous subscriber-only, not subscribed
            (None, "open:1", True, True),
            ("alice", "quiet:1", True, False),  # publishing off
        ],
    )
    def test_permissions(
        self, host: FakeHost, user: str | None, channel: str, subscribed: bool, allowed: bool
    ) -> None:
        c = connected(host, user)
        if subscribed:
            assert "error" not in subscribe(c, channel)
        out = c.send({"id": 9, "publish": {"channel": channel, "data": {"x": 1}}})
        calls = publishes(c)
        if allowed:
            assert out == [] and len(calls) == 1
        else:
            assert out == [{"id": 9, "error": err(ErrorCode.PERMISSION_DENIED)}]
            assert calls == []

    def test_unknown_namespace_and_bad_request(self, host: FakeHost) -> None:
        alice = connected(host)
        out = alice.send(
            {"id": 3, "publish": {"channel": "nowhere:1", "data": 1}},
            {"id": 4, "publish": {"channel": "room:1"}},
        )
        assert out == [
            {"id": 3, "error": err(ErrorCode.UNKNOWN_CHANNEL)},
            {"id": 4, "error": err(ErrorCode.BAD_REQUEST, "data is required")},
        ]
        assert publishes(alice) == []

    def test_publications_waiting_for_the_log_are_bounded(self, host: FakeHost) -> None:
        alice = connected(host)
        publish = {"publish": {"channel": "lobby:1", "data": 1}}
        for cid in range(MAX_OPERATIONS_IN_FLIGHT):
            assert alice.send({"id": 10 + cid, **publish}) == []
        (over,) = alice.send({"id": 9, **publish})
        message = "too many calls in flight"
        assert over["error"] == {"code": 111, "message": message, "temporary": True}
        calls = publishes(alice)
        assert len(calls) == MAX_OPERATIONS_IN_FLIGHT
        alice.session.complete(calls[0], Published(), T0)
        assert alice.send({"id": 8, **publish}) == [{"id": 10, "publish": {}}]
        assert len(publishes(alice)) == 1


class TestForClientStopsAtWhatOneCouldSubscribeTo:
    def test_not_another_users_channel_nor_a_private_one(self, host: FakeHost) -> None:
        bob = connected(host, "bob")
        for cid, channel in enumerate(["lobby:inbox#alice", "lobby:$secret"], start=3):
            out = bob.send({"id": cid, "publish": {"channel": channel, "data": 1}})
            assert out == [{"id": cid, "error": err(ErrorCode.PERMISSION_DENIED)}]
            (reply,) = bob.send({"id": cid, "presence": {"channel": channel}})
            assert reply == {"id": cid, "error": err(ErrorCode.PERMISSION_DENIED)}
        assert publishes(bob) == []
        # ... but one's own user channel is fine.
        alice = connected(host)
        assert alice.send({"id": 9, "publish": {"channel": "lobby:inbox#alice", "data": 1}}) == []

    def test_insecure_mode_allows_everything(self) -> None:
        host = FakeHost(settings(namespaces=NAMESPACES, client=ClientSettings(insecure=True)))
        bob = connected(host, "bob")
        assert bob.send({"id": 3, "publish": {"channel": "quiet:x", "data": 1}}) == []
        (reply,) = bob.send({"id": 4, "presence_stats": {"channel": "room:x"}})
        assert reply == {"id": 4, "presence_stats": {"num_clients": 0, "num_users": 0}}
