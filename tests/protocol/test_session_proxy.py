"""The session's backend operations: handed to the host, completed, and what waits for them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.fakes import T0, WALL, Client, FakeHost, settings, token
from tidings.codes import DisconnectCode, ErrorCode
from tidings.config import ChannelOptions, NamespaceSettings
from tidings.protocol.calls import MAX_OPERATIONS_IN_FLIGHT
from tidings.protocol.messages import ConnectRequest, RecoverPosition
from tidings.protocol.operations import (
    INTERNAL,
    Answered,
    Approved,
    ConnectCall,
    Connected,
    ConnectRecoverCall,
    Disconnected,
    NodeRpcCall,
    NotRecovered,
    Operation,
    Outcome,
    ProxyPublishCall,
    PublishCall,
    Published,
    RecoverCall,
    Recovered,
    RecoveredChannels,
    RefreshCall,
    Refreshed,
    Rejected,
    RpcCall,
    SubscribeCall,
    Subscribed,
)
from tidings.protocol.session import MAX_WAITING_COMMANDS, SessionState
from tidings.publication import Publication


def make_host(*events: str) -> FakeHost:
    host = FakeHost(
        settings(
            namespaces=[
                NamespaceSettings(name="backend", proxy_subscribe=True, proxy_publish=True),
                NamespaceSettings(name="public", allow_anonymous=True),
            ]
        )
    )
    host.proxied = set(events)
    return host


def parsed(client: Client) -> list[dict[str, Any]]:
    return [orjson.loads(m) for m in client.session.take_output()]


def only(client: Client) -> Operation:
    operations = client.session.take_operations()
    assert len(operations) == 1, operations
    return operations[0]


def complete(client: Client, operation: Operation, outcome: Outcome) -> list[dict[str, Any]]:
    client.session.complete(operation, outcome, T0)
    return parsed(client)


def proxy_connected(client: Client, outcome: Connected | None = None) -> dict[str, Any]:
    assert client.send({"id": 1, "connect": {"name": "js", "data": {"hello": 1}}}) == []
    call = only(client)
    assert isinstance(call, ConnectCall)
    replies = complete(client, call, outcome or Connected("bob"))
    assert [r["id"] for r in replies] == [1]
    result: dict[str, Any] = replies[0]["connect"]
    return result


class TestConnectProxy:
    def test_the_backend_names_the_user(self) -> None:
        client = Client(make_host("connect"))
        assert client.send({"id": 1, "connect": {"name": "js", "data": {"hello": 1}}}) == []
        call = only(client)
        assert isinstance(call, ConnectCall)
        assert call.request.data == b'{"hello":1}' and call.command_id == 1
        assert call.client and call.client == client.session.client_id
        outcome = Connected("bob", info=b'{"n":1}', data=b'{"welcome":true}', meta=b'{"m":2}')
        [reply] = complete(client, call, outcome)
        result = reply["connect"]
        assert result["client"] == call.client
        assert result["data"] == {"welcome": True}
        assert "expires" not in result
        session = client.session
        assert (session.state, session.user, session.info) == (
            SessionState.CONNECTED,
            "bob",
            b'{"n":1}',
        )

    def test_a_token_is_still_verified_by_itself(self) -> None:
        client = Client(make_host("connect"))
        client.connect()
        assert client.session.take_operations() == []
        assert client.session.user == "alice"

    def test_server_side_subscriptions_with_their_data(self) -> None:
        client = Client(make_host("connect"))
        outcome = Connected("bob", channels=("news", "public:x"), sub_data=(("news", b"[1]"),))
        result = proxy_connected(client, outcome)
        assert set(result["subs"]) == {"news", "public:x"}
        assert result["subs"]["news"]["data"] == [1]
        assert client.session.server_channels == {"news", "public:x"}

    def test_commands_wait_for_the_connect(self) -> None:
        client = Client(make_host("connect"))
        frame = [
            {"id": 1, "connect": {}},
            {"id": 2, "subscribe": {"channel": "news"}},
            {},  # a pong waits too, before the connect is done
            {"id": 3, "unsubscribe": {"channel": "news"}},
        ]
        assert client.send(*frame) == []
        assert client.session.state is SessionState.CONNECTING
        call = only(client)
        replies = complete(client, call, Connected("bob"))
        assert [r["id"] for r in replies] == [1, 2, 3]
        assert "subscribe" in replies[1] and replies[2]["unsubscribe"] == {}

    def test_an_error_is_answered_as_the_backend_gave_it(self) -> None:
        host = make_host("connect")
        client = Client(host)
        client.send({"id": 7, "connect": {}})
        [reply] = complete(client, only(client), Rejected(1000, "go away"))
        assert reply == {"id": 7, "error": {"code": 1000, "message": "go away"}}
        assert client.session.state is SessionState.CONNECTING
        assert host.errors == [1000] and host.admitted == []

    def test_a_failure_is_a_temporary_internal_error(self) -> None:
        client = Client(make_host("connect"))
        client.send({"id": 7, "connect": {}})
        [reply] = complete(client, only(client), INTERNAL)
        assert reply["error"] == {"code": 100, "message": "internal", "temporary": True}

    def test_a_disconnect_closes_with_its_code(self) -> None:
        host = make_host("connect")
        client = Client(host)
        client.send({"id": 1, "connect": {}})
        assert complete(client, only(client), Disconnected(4501, "banned")) == []
        assert (client.session.close_code, client.session.close_reason) == (4501, "banned")
        assert host.admitted == []

    def test_an_expire_at_in_the_past_closes_3005(self) -> None:
        client = Client(make_host("connect"))
        client.send({"id": 1, "connect": {}})
        complete(client, only(client), Connected("bob", expire_at=int(WALL) - 5))
        assert client.session.close_code == DisconnectCode.EXPIRED

    def test_a_late_completion_is_ignored(self) -> None:
        client = Client(make_host("connect"))
        client.send({"id": 1, "connect": {}})
        call = only(client)
        client.session.closed()
        assert complete(client, call, Connected("bob")) == []
        assert client.session.state is SessionState.CLOSED

    def test_a_completion_twice_counts_once(self) -> None:
        client = Client(make_host("connect"))
        client.send({"id": 1, "connect": {}})
        call = only(client)
        assert len(complete(client, call, Connected("bob"))) == 1
        assert complete(client, call, Connected("eve")) == []
        assert client.session.user == "bob"

    def test_too_many_waiting_commands_close_3013(self) -> None:
        client = Client(make_host("connect"))
        client.send({"id": 1, "connect": {}})
        for i in range(MAX_WAITING_COMMANDS + 1):
            client.send({"id": 2 + i, "unsubscribe": {"channel": "x"}})
        assert client.session.close_code == DisconnectCode.TOO_MANY_REQUESTS

    def test_the_stale_timer_still_runs(self) -> None:
        client = Client(make_host("connect"))
        client.send({"id": 1, "connect": {}})
        client.tick(T0 + client.host.settings.client.stale_timeout)
        assert client.session.close_code == DisconnectCode.STALE

    @pytest.mark.parametrize(
        ("outcome", "code"),
        [
            (INTERNAL, DisconnectCode.INTERNAL_ERROR),
            (Rejected(1000, "no"), DisconnectCode.PERMISSION_DENIED),
            (Disconnected(4000, "later"), 4000),
        ],
    )
    def test_push_only_refusals_are_closes(self, outcome: Outcome, code: int) -> None:
        from tidings.protocol.messages import ConnectRequest

        client = Client(make_host("connect"), bidirectional=False)
        client.session.connect_unidirectional(ConnectRequest(), T0)
        call = only(client)
        client.session.connect_unidirectional(ConnectRequest(), T0)  # a second one waits
        assert client.session.take_operations() == []
        complete(client, call, outcome)
        assert client.session.close_code == code

    def test_push_only_connect(self) -> None:
        from tidings.protocol.messages import ConnectRequest

        client = Client(make_host("connect"), bidirectional=False)
        client.session.connect_unidirectional(ConnectRequest(), T0)
        [push] = complete(client, only(client), Connected("bob", data=b"1"))
        assert push["connect"]["data"] == 1 and "pong" not in push["connect"]


class TestRefreshProxy:
    def connected(self, *events: str) -> Client:
        client = Client(make_host("connect", *events))
        result = proxy_connected(client, Connected("bob", expire_at=int(WALL) + 60))
        assert "expires" not in result and "ttl" not in result
        return client

    def test_the_backend_extends_the_connection(self) -> None:
        client = self.connected("refresh")
        client.tick(T0 + 59)
        assert client.session.take_operations() == []
        client.tick(T0 + 60)
        call = only(client)
        assert isinstance(call, RefreshCall) and call.user == "bob"
        client.tick(T0 + 61)  # one refresh at a time
        assert client.session.take_operations() == []
        client.session.complete(call, Refreshed(expire_at=int(WALL) + 600, info=b"2"), T0 + 61)
        assert client.session.close_code is None and client.session.info == b"2"
        client.send({}, at=T0 + 61)  # the pong of the ping at T0 + 59
        client.tick(T0 + 599)
        assert client.session.take_operations() == []
        client.tick(T0 + 600)
        assert isinstance(only(client), RefreshCall)

    def test_expired_closes_3005(self) -> None:
        client = self.connected("refresh")
        client.tick(T0 + 60)
        client.session.complete(only(client), Refreshed(expired=True), T0 + 60)
        assert client.session.close_code == DisconnectCode.EXPIRED

    def test_without_a_refresh_proxy_it_expires_at_once(self) -> None:
        client = self.connected()
        client.tick(T0 + 60)
        assert client.session.close_code == DisconnectCode.EXPIRED

    def test_a_disconnect_closes(self) -> None:
        client = self.connected("refresh")
        client.tick(T0 + 60)
        client.session.complete(only(client), Disconnected(4502, "revoked"), T0 + 60)
        assert client.session.close_code == 4502


class TestSubscribeProxy:
    def connected(self) -> tuple[FakeHost, Client]:
        host = make_host()
        client = Client(host)
        client.connect()
        return host, client

    def test_the_backend_allows_it(self) -> None:
        host, client = self.connected()
        command = {"id": 2, "subscribe": {"channel": "backend:1", "data": {"why": "x"}}}
        assert client.send(command) == []
        call = only(client)
        assert isinstance(call, SubscribeCall)
        assert (call.request.channel, call.request.data, call.user) == (
            "backend:1",
            b'{"why":"x"}',
            "alice",
        )
        assert "backend:1" not in client.session.channels
        [reply] = complete(client, call, Subscribed(b'{"ok":1}'))
        assert reply["id"] == 2 and reply["subscribe"]["data"] == {"ok": 1}
        assert "backend:1" in client.session.channels
        assert host.subscribe_calls[-1][1] == "backend:1"

    def test_refused_by_the_backend(self) -> None:
        host, client = self.connected()
        client.send({"id": 2, "subscribe": {"channel": "backend:1"}})
        [reply] = complete(client, only(client), Rejected(403, "not yours", False))
        assert reply == {"id": 2, "error": {"code": 403, "message": "not yours"}}
        assert "backend:1" not in client.session.channels
        assert host.subscribe_calls == []

    def test_later_commands_wait_and_see_it(self) -> None:
        _, client = self.connected()
        replies = client.send(
            {"id": 2, "subscribe": {"channel": "backend:1"}},
            {"id": 3, "subscribe": {"channel": "backend:1"}},
            {"id": 4, "unsubscribe": {"channel": "backend:1"}},
        )
        assert replies == []
        [call] = client.session.take_operations()
        replies = complete(client, call, Subscribed())
        assert [r["id"] for r in replies] == [2, 3, 4]
        assert replies[1]["error"]["code"] == ErrorCode.ALREADY_SUBSCRIBED
        assert client.session.channels == set()

    def test_a_waiting_subscribe_may_wait_in_turn(self) -> None:
        _, client = self.connected()
        client.send(
            {"id": 2, "subscribe": {"channel": "backend:1"}},
            {"id": 3, "subscribe": {"channel": "backend:2"}},
            {"id": 4, "unsubscribe": {"channel": "backend:2"}},
        )
        first = only(client)
        assert complete(client, first, Subscribed())[0]["id"] == 2
        second = only(client)
        assert isinstance(second, SubscribeCall) and second.request.channel == "backend:2"
        assert [r["id"] for r in complete(client, second, Subscribed())] == [3, 4]

    def test_subscribed_by_the_server_meanwhile(self) -> None:
        host, client = self.connected()
        client.send({"id": 2, "subscribe": {"channel": "backend:1"}})
        call = only(client)
        assert client.session.server_subscribe("backend:1")
        client.session.take_output()
        [reply] = complete(client, call, Subscribed())
        assert reply["error"]["code"] == ErrorCode.ALREADY_SUBSCRIBED
        assert [c[1] for c in host.subscribe_calls] == ["backend:1"]

    def test_a_token_decides_by_itself(self) -> None:
        from tests.fakes import token

        _, client = self.connected()
        tok = token("alice", channel="backend:1")
        [reply] = client.send({"id": 2, "subscribe": {"channel": "backend:1", "token": tok}})
        assert "subscribe" in reply and client.session.take_operations() == []

    def test_names_are_checked_first(self) -> None:
        _, client = self.connected()
        [reply] = client.send({"id": 2, "subscribe": {"channel": "nowhere:1"}})
        assert reply["error"]["code"] == ErrorCode.UNKNOWN_CHANNEL
        assert client.session.take_operations() == []


class TestRpcProxy:
    def connected(self, *methods: str) -> Client:
        host = make_host("rpc")
        host.rpc_methods = set(methods)
        client = Client(host)
        client.connect()
        return client

    def test_forwarded_and_answered(self) -> None:
        client = self.connected()
        assert client.send({"id": 5, "rpc": {"method": "sum", "data": [1, 2]}}) == []
        call = only(client)
        assert isinstance(call, RpcCall)
        assert (call.method, call.data, call.user) == ("sum", b"[1,2]", "alice")
        assert complete(client, call, Answered(b"3")) == [{"id": 5, "rpc": {"data": 3}}]

    def test_calls_do_not_wait_for_each_other(self) -> None:
        client = self.connected()
        replies = client.send(
            {"id": 5, "rpc": {"method": "a"}},
            {"id": 6, "rpc": {"method": "b"}},
            {"id": 7, "unsubscribe": {"channel": "x"}},
        )
        assert replies == [{"id": 7, "unsubscribe": {}}]
        a, b = client.session.take_operations()
        assert complete(client, b, Answered()) == [{"id": 6, "rpc": {}}]
        assert complete(client, a, Rejected(1001, "nope", True)) == [
            {"id": 5, "error": {"code": 1001, "message": "nope", "temporary": True}}
        ]

    def test_a_method_not_configured_is_104(self) -> None:
        client = self.connected("sum")
        [reply] = client.send({"id": 5, "rpc": {"method": "drop"}})
        assert reply["error"]["code"] == ErrorCode.METHOD_NOT_FOUND

    @pytest.mark.parametrize(
        ("method", "problem"),
        [
            ("get\x00user", "method name holds a control character (U+0000 at index 3)"),
            ("m\x1b[2J", "method name holds a control character (U+001B at index 1)"),
            ("m" * 256, "method name is 256 bytes long, over the limit of 255"),
        ],
        ids=["nul", "escape", "too-long"],
    )
    def test_a_bad_method_name_is_107_and_never_forwarded(self, method: str, problem: str) -> None:
        client = self.connected()
        [reply] = client.send({"id": 5, "rpc": {"method": method}})
        assert reply == {"id": 5, "error": {"code": 107, "message": problem}}
        assert client.session.take_operations() == []
        # An empty method, as Centrifugo allows, and any script are forwarded.
        assert client.send({"id": 6, "rpc": {"method": ""}}) == []
        assert client.send({"id": 7, "rpc": {"method": "créer facture"}}) == []

    def test_without_a_proxy_rpc_is_108(self) -> None:
        client = Client(make_host())
        client.connect()
        [reply] = client.send({"id": 5, "rpc": {"method": "sum"}})
        assert reply["error"]["code"] == ErrorCode.NOT_AVAILABLE

    def test_calls_in_flight_are_bounded(self) -> None:
        client = self.connected()
        for i in range(MAX_OPERATIONS_IN_FLIGHT):
            assert client.send({"id": i + 1, "rpc": {"method": "m"}}) == []
        [reply] = client.send({"id": 999, "rpc": {"method": "m"}})
        assert reply["error"]["code"] == ErrorCode.TOO_MANY_REQUESTS
        assert client.session.pending == MAX_OPERATIONS_IN_FLIGHT

    def test_a_disconnect_answer_closes(self) -> None:
        client = self.connected()
        client.send({"id": 5, "rpc": {"method": "m"}})
        complete(client, only(client), Disconnected(3000, "bye"))
        assert client.session.close_code == 3000

    def test_after_a_disconnect_other_calls_are_dropped(self) -> None:
        client = self.connected()
        client.send({"id": 5, "rpc": {"method": "m"}}, {"id": 6, "rpc": {"method": "m"}})
        a, b = client.session.take_operations()
        complete(client, a, Disconnected(3000, "bye"))
        assert complete(client, b, Answered(b"1")) == []


class TestNodeMethods:
    """``tidings.*`` methods are the node's own (Web Push registration): they leave as a
    NodeRpcCall whether or not an RPC proxy is configured, and never as an RpcCall."""

    @pytest.mark.parametrize("events", [(), ("rpc",)], ids=["no-proxy", "rpc-proxy"])
    def test_handed_to_the_node_and_answered(self, events: tuple[str, ...]) -> None:
        client = Client(make_host(*events))
        client.connect()
        data = {"endpoint": "https://push.example/1", "keys": {}}
        msg = {"id": 5, "rpc": {"method": "tidings.push.subscribe", "data": data}}
        assert client.send(msg) == []
        call = only(client)
        assert isinstance(call, NodeRpcCall)
        assert (call.method, call.user, call.command_id) == ("tidings.push.subscribe", "alice", 5)
        assert orjson.loads(call.data or b"") == data
        assert complete(client, call, Answered(b"{}")) == [{"id": 5, "rpc": {"data": {}}}]

    def test_the_call_carries_the_channels_the_session_reads(self) -> None:
        """Read receipts accept a channel the connection is subscribed to."""
        client = Client(make_host())
        client.connect()
        assert "subscribe" in client.send({"id": 2, "subscribe": {"channel": "news"}})[0]
        client.send({"id": 5, "rpc": {"method": "tidings.read", "data": {"channel": "news"}}})
        call = only(client)
        assert isinstance(call, NodeRpcCall) and call.reads == frozenset({"news"})
        client.send({"id": 6, "unsubscribe": {"channel": "news"}})
        client.send({"id": 7, "rpc": {"method": "tidings.unread", "data": {"channel": "news"}}})
        call = only(client)
        assert isinstance(call, NodeRpcCall) and call.reads == frozenset()

    def test_errors_come_back_with_their_code(self) -> None:
        client = Client(make_host())
        client.connect()
        client.send({"id": 5, "rpc": {"method": "tidings.push.subscribe"}})
        call = only(client)
        assert complete(client, call, Rejected(107, "endpoint must be an https:// URL")) == [
            {"id": 5, "error": {"code": 107, "message": "endpoint must be an https:// URL"}}
        ]

    def test_do_not_hold_later_commands(self) -> None:
        client = Client(make_host())
        client.connect()
        replies = client.send(
            {"id": 5, "rpc": {"method": "tidings.push.key"}},
            {"id": 6, "unsubscribe": {"channel": "x"}},
        )
        assert replies == [{"id": 6, "unsubscribe": {}}]
        assert isinstance(only(client), NodeRpcCall)

    def test_other_methods_still_need_the_proxy(self) -> None:
        client = Client(make_host())
        client.connect()
        [reply] = client.send({"id": 5, "rpc": {"method": "tidingsx.push"}})
        assert reply["error"]["code"] == ErrorCode.NOT_AVAILABLE
        assert client.session.take_operations() == []


class TestPublishProxy:
    def connected(self) -> Client:
        client = Client(make_host())
        client.connect()
        return client

    def test_approved_then_appended_with_the_backends_data(self) -> None:
        client = self.connected()
        command = {"id": 2, "publish": {"channel": "backend:1", "data": {"t": "hi"}}}
        assert client.send(command) == []
        call = only(client)
        assert isinstance(call, ProxyPublishCall)
        assert (call.channel, call.data, call.user) == ("backend:1", b'{"t":"hi"}', "alice")
        assert complete(client, call, Approved(b'{"t":"HI"}')) == []
        append = only(client)
        assert isinstance(append, PublishCall)
        assert (append.channel, append.data, append.command_id) == ("backend:1", b'{"t":"HI"}', 2)
        assert complete(client, append, Published()) == [{"id": 2, "publish": {}}]

    def test_approved_without_data_keeps_the_clients(self) -> None:
        client = self.connected()
        client.send({"id": 2, "publish": {"channel": "backend:1", "data": [1]}})
        complete(client, only(client), Approved())
        append = only(client)
        assert isinstance(append, PublishCall) and append.data == b"[1]"

    def test_refused_by_the_backend_is_not_appended(self) -> None:
        client = self.connected()
        client.send({"id": 2, "publish": {"channel": "backend:1", "data": 1}})
        [reply] = complete(client, only(client), Rejected(1003, "read only"))
        assert reply == {"id": 2, "error": {"code": 1003, "message": "read only"}}
        assert client.session.take_operations() == []

    def test_publications_reach_the_log_in_order(self) -> None:
        client = self.connected()
        client.send(
            {"id": 2, "publish": {"channel": "backend:1", "data": 1}},
            {"id": 3, "publish": {"channel": "backend:1", "data": 2}},
        )
        first = only(client)  # the second waits for the first's verdict
        complete(client, first, Approved())
        append, second = client.session.take_operations()
        assert isinstance(append, PublishCall) and append.data == b"1"
        assert isinstance(second, ProxyPublishCall) and second.data == b"2"

    def test_the_namespace_options_do_not_apply(self) -> None:
        client = self.connected()
        [reply] = client.send({"id": 2, "publish": {"channel": "public:1", "data": 1}})
        assert reply["error"]["code"] == ErrorCode.PERMISSION_DENIED  # not proxied: refused
        client.send({"id": 3, "publish": {"channel": "backend:1", "data": 1}})
        assert isinstance(only(client), ProxyPublishCall)  # proxied: the backend decides


class TestRecoverFromLog:
    """A subscription whose position the window no longer reaches: the log is read first."""

    def connected(self, limit: int = 10_000) -> tuple[FakeHost, Client]:
        host = FakeHost(
            settings(
                channels=ChannelOptions(recovery_max_publications=limit),
                namespaces=[NamespaceSettings(name="backend", proxy_subscribe=True)],
            )
        )
        host.log_recovers = {"news", "backend:1"}
        for offset in range(10, 15):  # the window holds 10..14, complete from 9
            host.hub.publish(pub("news", offset), size=100, ttl=300, now=WALL)
        host.history.window("news").complete_since = 9  # type: ignore[union-attr]
        host.head = 14
        client = Client(host)
        client.connect()
        return host, client

    def subscribe(self, client: Client, channel: str = "news") -> RecoverCall:
        command = {"subscribe": {"channel": channel, "recover": True, "offset": 3, "epoch": "ep1"}}
        later = {"id": 3, "presence_stats": {"channel": "x"}}
        assert client.send({"id": 2, **command}, later) == []
        call = only(client)
        assert isinstance(call, RecoverCall)
        assert call.request.position == RecoverPosition(3, "ep1") and call.command_id == 2
        assert channel not in client.session.channels
        return call

    def test_the_read_and_the_window_make_the_recovery(self) -> None:
        host, client = self.connected()
        call = self.subscribe(client)
        read = tuple(pub("news", offset) for offset in (4, 6, 9))
        replies = complete(client, call, Recovered(read, 9))
        assert [r["id"] for r in replies] == [2, 3]  # the waiting command after it
        result = replies[0]["subscribe"]
        assert result["recovered"] is True
        assert [p["offset"] for p in result["publications"]] == [4, 6, 9, 10, 11, 12, 13, 14]
        assert host.subscribe_calls[-1][1:] == ("news", RecoverPosition(9, "ep1"))
        assert "news" in client.session.channels

    def test_a_failed_read_is_not_recovered_with_nothing_replayed(self) -> None:
        _, client = self.connected()
        [reply, _] = complete(client, self.subscribe(client), NotRecovered("too_many"))
        result = reply["subscribe"]
        assert result["was_recovering"] is True
        assert "recovered" not in result and "publications" not in result
        assert "news" in client.session.channels

    def test_the_read_and_the_window_together_over_the_limit_are_not_recovered(self) -> None:
        _, client = self.connected(limit=7)
        read = tuple(pub("news", offset) for offset in (4, 6, 9))
        [reply, _] = complete(client, self.subscribe(client), Recovered(read, 9))
        assert "recovered" not in reply["subscribe"]
        assert "publications" not in reply["subscribe"]

    def test_after_the_subscribe_proxy_with_its_data(self) -> None:
        host, client = self.connected()
        host.proxied = {"subscribe"}
        command = {"channel": "backend:1", "recover": True, "offset": 3, "epoch": "ep1"}
        client.send({"id": 2, "subscribe": command})
        assert complete(client, only(client), Subscribed(b'{"ok":1}', b'{"i":1}')) == []
        call = only(client)
        assert isinstance(call, RecoverCall) and call.chan_info == b'{"i":1}'
        [reply] = complete(client, call, Recovered((pub("backend:1", 5),), 14))
        assert reply["subscribe"]["data"] == {"ok": 1}
        assert [p["offset"] for p in reply["subscribe"]["publications"]] == [5]

    def test_subscribed_by_the_server_meanwhile(self) -> None:
        _, client = self.connected()
        call = self.subscribe(client)
        assert client.session.server_subscribe("news")
        client.session.take_output()
        [reply, _] = complete(client, call, Recovered((), 14))
        assert reply["error"]["code"] == ErrorCode.ALREADY_SUBSCRIBED

    def test_a_recovery_the_window_serves_needs_no_read(self) -> None:
        host, client = self.connected()
        host.log_recovers = set()
        command = {"channel": "news", "recover": True, "offset": 11, "epoch": "ep1"}
        [reply] = client.send({"id": 2, "subscribe": command})
        assert [p["offset"] for p in reply["subscribe"]["publications"]] == [12, 13, 14]
        assert client.session.take_operations() == []


class TestConnectRecoverFromLog:
    """Server-side subscriptions (the token's ``channels``) whose positions in the connect
    request's ``subs`` the windows no longer reach: the log is read before the reply."""

    def host(self) -> FakeHost:
        host = FakeHost(settings(channels=ChannelOptions(recovery_max_publications=10_000)))
        host.log_recovers = {"news"}
        for offset in range(10, 15):  # the window holds 10..14, complete from 9
            host.hub.publish(pub("news", offset), size=100, ttl=300, now=WALL)
        host.history.window("news").complete_since = 9  # type: ignore[union-attr]
        host.head = 14
        return host

    def request(self) -> dict[str, Any]:
        subs = {
            "news": {"recover": True, "offset": 3, "epoch": "ep1"},
            "chat": {"recover": True, "offset": 14, "epoch": "ep1"},
        }
        return {"token": token(channels=["news", "chat"]), "subs": subs}

    def test_the_reply_waits_for_the_read_and_joins_it_to_the_window(self) -> None:
        host = self.host()
        client = Client(host)
        later = {"id": 2, "presence_stats": {"channel": "x"}}
        assert client.send({"id": 1, "connect": self.request()}, later) == []
        call = only(client)
        assert isinstance(call, ConnectRecoverCall)
        assert call.since == {"news": 3} and call.command_id == 1
        assert client.session.channels == set()
        read = tuple(pub("news", offset) for offset in (4, 6, 9))
        replies = complete(client, call, RecoveredChannels({"news": Recovered(read, 9)}))
        assert [r["id"] for r in replies] == [1, 2]  # the waiting command after it
        subs = replies[0]["connect"]["subs"]
        assert subs["news"]["recovered"] is True
        offsets = [p["offset"] for p in subs["news"]["publications"]]
        assert offsets == [4, 6, 9, 10, 11, 12, 13, 14]
        assert subs["chat"]["recovered"] is True and "publications" not in subs["chat"]
        assert ("news", RecoverPosition(9, "ep1")) in [c[1:] for c in host.subscribe_calls]
        assert client.session.server_channels == {"news", "chat"}

    def test_a_failed_read_is_not_recovered_with_nothing_replayed(self) -> None:
        client = Client(self.host())
        client.send({"id": 1, "connect": self.request()})
        call = only(client)
        [reply] = complete(client, call, RecoveredChannels({"news": NotRecovered("gone")}))
        news = reply["connect"]["subs"]["news"]
        assert news["was_recovering"] is True
        assert "recovered" not in news and "publications" not in news

    def test_a_push_only_connection_gets_its_connect_push_after_the_read(self) -> None:
        client = Client(self.host(), bidirectional=False)
        body = self.request()
        request = ConnectRequest(
            token=body["token"],
            subs={
                "news": RecoverPosition(3, "ep1"),
                "chat": RecoverPosition(14, "ep1"),
            },
        )
        client.session.connect_unidirectional(request, T0)
        assert client.session.take_output() == []
        call = only(client)
        assert isinstance(call, ConnectRecoverCall)
        read = (pub("news", 5),)
        [push] = complete(client, call, RecoveredChannels({"news": Recovered(read, 9)}))
        offsets = [p["offset"] for p in push["connect"]["subs"]["news"]["publications"]]
        assert offsets == [5, 10, 11, 12, 13, 14]

    def test_positions_the_windows_reach_need_no_read(self) -> None:
        host = self.host()
        host.log_recovers = set()
        client = Client(host)
        request = self.request()
        request["subs"]["news"]["offset"] = 11
        [reply] = client.send({"id": 1, "connect": request})
        offsets = [p["offset"] for p in reply["connect"]["subs"]["news"]["publications"]]
        assert offsets == [12, 13, 14]
        assert client.session.take_operations() == []


def pub(channel: str, offset: int) -> Publication:
    return Publication(channel, offset, b'{"n":%d}' % offset, WALL)
