"""The sans-I/O session: frames in, exact JSON and close codes out, with a fake host."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.fakes import SECRET, T0, WALL, Client, FakeHost, settings, token
from tidings import __version__
from tidings.codes import DisconnectCode
from tidings.config import ClientSettings, NamespaceSettings
from tidings.protocol.messages import ConnectRequest, RecoverPosition
from tidings.protocol.session import SessionState


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def client(host: FakeHost) -> Client:
    return Client(host)


@pytest.fixture
def alice(host: FakeHost) -> Client:
    """A connected client of user alice (token without expiry)."""
    c = Client(host, name="alice")
    c.connect()
    return c


def error(cid: int, code: int, message: str) -> dict[str, Any]:
    return {"id": cid, "error": {"code": code, "message": message}}


def quiet(c: Client) -> ClientSettings:
    return c.host.settings.client


# ---------------------------------------------------------------------------- connect
class TestConnect:
    def test_valid_token_exact_reply(self, client: Client, host: FakeHost) -> None:
        out = client.raw(orjson.dumps({"id": 1, "connect": {"token": token()}}))
        s = client.session
        assert out == [
            b'{"id":1,"connect":{"client":"%s","version":"%s","ping":25,"pong":true}}'
            % (s.client_id.encode(), __version__.encode())
        ]
        assert s.state is SessionState.CONNECTED
        assert s.user == "alice"
        assert s.close_code is None
        assert host.admitted == [s]

    def test_client_ids_are_unique(self, host: FakeHost) -> None:
        ids = {Client(host).connect()["client"] for _ in range(5)}
        assert len(ids) == 5

    def test_expiring_token_reports_ttl(self, client: Client) -> None:
        result = client.connect(token(exp=int(WALL) + 120))
        assert result["expires"] is True
        assert result["ttl"] == 120

    def test_ttl_is_at_least_one(self, client: Client) -> None:
        # Expiring within the same second must still say a positive ttl.
        result = client.send(
            {"id": 1, "connect": {"token": token(exp=int(WALL) + 1)}}, at=T0 + 0.9
        )[0]["connect"]
        assert result["ttl"] == 1

    def test_info_claim_is_kept_as_raw_json(self, client: Client) -> None:
        client.connect(token(info={"name": "Alice", "n": [1, 2]}))
        assert client.session.info == b'{"name":"Alice","n":[1,2]}'

    def test_expired_token_answers_109_and_stays_open(self, client: Client) -> None:
        replies = client.send({"id": 1, "connect": {"token": token(exp=int(WALL) - 10)}})
        assert replies == [error(1, 109, "token expired")]
        assert client.session.close_code is None
        assert client.session.state is SessionState.CONNECTING
        # The SDK then comes back with a fresh token on the same connection.
        assert client.connect(token(), cid=2)["client"]

    def test_expire_at_overrides_exp(self, client: Client) -> None:
        result = client.connect(token(exp=int(WALL) - 10, expire_at=int(WALL) + 50))
        assert result["ttl"] == 50

    def test_expire_at_zero_means_no_expiry(self, client: Client) -> None:
        result = client.connect(token(exp=int(WALL) - 10, expire_at=0))
        assert "expires" not in result and "ttl" not in result

    @pytest.mark.parametrize(
        "tok",
        [
            token(secret="another-secret-0123456789abcdefgh"),
            "not.a.jwt",
            "garbage",
            token(sub=42),
            token(channel="news"),  # a subscription token cannot open a connection
            token(sub="\ud800"),
            token(sub="al\x00ice"),
            token(sub="x" * 256),
        ],
        ids=[
            "bad-signature",
            "malformed",
            "garbage",
            "sub-not-a-string",
            "subscription-token",
            "sub-lone-surrogate",
            "sub-nul",
            "sub-too-long",
        ],
    )
    def test_invalid_token_closes_3500(self, client: Client, host: FakeHost, tok: str) -> None:
        assert client.send({"id": 1, "connect": {"token": tok}}) == []
        assert client.session.close_code == DisconnectCode.INVALID_TOKEN
        assert client.session.state is SessionState.CLOSED
        assert host.admitted == [] and host.released == []

    @pytest.mark.parametrize("body", [{}, {"token": ""}, {"token": None}, None])
    def test_missing_token_closes_3500(self, client: Client, body: Any) -> None:
        assert client.send({"id": 1, "connect": body}) == []
        assert client.session.close_code == DisconnectCode.INVALID_TOKEN

    def test_missing_token_is_anonymous_when_allowed(self) -> None:
        c = Client(FakeHost(anonymous=True))
        result = c.connect("")
        assert c.session.user == ""
        assert result["client"] == c.session.client_id

    @pytest.mark.parametrize(
        "first",
        [
            {"id": 1, "subscribe": {"channel": "news"}},
            {"id": 1, "refresh": {"token": "x"}},
            {"id": 1, "publish": {"channel": "news", "data": {}}},
            {"id": 1, "foo": {}},
            {},
            {"send": {"data": 1}},
        ],
        ids=["subscribe", "refresh", "publish", "unknown", "pong", "send"],
    )
    def test_first_command_must_be_connect(self, client: Client, first: dict[str, Any]) -> None:
        assert client.send(first) == []
        assert client.session.close_code == DisconnectCode.BAD_REQUEST

    def test_connect_with_a_bad_field_closes_3501(self, client: Client) -> None:
        assert client.send({"id": 1, "connect": {"token": 5}}) == []
        assert client.session.close_code == DisconnectCode.BAD_REQUEST

    def test_second_connect_closes_3501(self, alice: Client, host: FakeHost) -> None:
        assert alice.send({"id": 2, "connect": {"token": token()}}) == []
        assert alice.session.close_code == DisconnectCode.BAD_REQUEST
        assert host.released == [alice.session]

    def test_connect_and_subscribe_in_one_frame_in_order(self, client: Client) -> None:
        replies = client.send(
            {"connect": {"token": token(), "data": {"a": 1}, "name": "js"}, "id": 1},
            {"subscribe": {"channel": "news", "flag": 1}, "id": 2},
            {"subscribe": {"channel": "user#alice", "flag": 1}, "id": 3},
        )
        assert [r["id"] for r in replies] == [1, 2, 3]
        assert "connect" in replies[0]
        assert replies[1] == {
            "id": 2,
            "subscribe": {"recoverable": True, "positioned": True, "epoch": "ep1", "offset": 0},
        }
        assert client.session.channels == {"news", "user#alice"}

    def test_failed_connect_stops_the_rest_of_the_frame(
        self, client: Client, host: FakeHost
    ) -> None:
        replies = client.send(
            {"id": 1, "connect": {"token": "bad"}}, {"id": 2, "subscribe": {"channel": "news"}}
        )
        assert replies == []
        assert host.subscribe_calls == []

    def test_admission_refused(self, client: Client, host: FakeHost) -> None:
        host.refuse = DisconnectCode.CONNECTION_LIMIT
        assert client.send({"id": 1, "connect": {"token": token()}}) == []
        assert client.session.close_code == DisconnectCode.CONNECTION_LIMIT
        assert client.session.client_id == ""
        assert host.released == []  # never admitted, so never released

    def test_connect_without_id_gets_no_reply(self, client: Client) -> None:
        assert client.send({"connect": {"token": token()}}) == []
        assert client.session.state is SessionState.CONNECTED


# ---------------------------------------------------------------------------- subscribe
class TestSubscribe:
    def test_public_channel_exact_reply(self, alice: Client, host: FakeHost) -> None:
        host.publish("news", {"n": 1})
        out = alice.raw(b'{"id":2,"subscribe":{"channel":"news"}}')
        assert out == [
            b'{"id":2,"subscribe":{"recoverable":true,"positioned":true,"epoch":"ep1","offset":1}}'
        ]
        assert host.hub.subscribers("news") == 1

    def test_result_key_present_when_empty(self, alice: Client) -> None:
        out = alice.raw(b'{"id":2,"subscribe":{"channel":"nohistory:feed"}}')
        assert out == [b'{"id":2,"subscribe":{}}']

    def test_live_publications_reach_the_subscriber(self, alice: Client, host: FakeHost) -> None:
        alice.send({"id": 2, "subscribe": {"channel": "news"}})
        pub = host.publish("news", {"n": 1})
        host.publish("other", {"n": 2})
        assert alice.sink.pubs == [pub]

    def test_user_limited_channel_of_self(self, alice: Client) -> None:
        assert alice.send({"id": 2, "subscribe": {"channel": "user#alice"}})[0]["subscribe"]
        assert alice.send({"id": 3, "subscribe": {"channel": "dialog#bob,alice"}})[0]["subscribe"]

    @pytest.mark.parametrize("channel", ["user#bob", "dialog#bob,carol", "closed:inbox#bob"])
    def test_user_limited_channel_of_someone_else(self, alice: Client, channel: str) -> None:
        assert alice.send({"id": 2, "subscribe": {"channel": channel}}) == [
            error(2, 103, "permission denied")
        ]
        assert alice.session.channels == set()

    def test_user_limited_channel_in_a_closed_namespace_of_self(self, alice: Client) -> None:
        assert "subscribe" in alice.send({"id": 2, "subscribe": {"channel": "closed:in#alice"}})[0]

    @pytest.mark.parametrize("channel", ["nowhere:x", "nowhere:x#alice"])
    def test_unknown_namespace_102(self, alice: Client, channel: str) -> None:
        assert alice.send({"id": 2, "subscribe": {"channel": channel}}) == [
            error(2, 102, "unknown channel")
        ]

    @pytest.mark.parametrize(
        ("channel", "message"),
        [
            ("has space", "channel name holds whitespace (U+0020 at index 3)"),
            ("nul\x00", "channel name holds a control character (U+0000 at index 3)"),
            ("c1\x9b", "channel name holds a control character (U+009B at index 2)"),
            ("x" * 256, "channel name is 256 bytes long, over the limit of 255"),
            ("ü" * 128, "channel name is 256 bytes long, over the limit of 255"),
            ("user#", "channel name 'user#' has a '#' but names no user after it"),
            ("user#,", "channel name 'user#,' has a '#' but names no user after it"),
        ],
        ids=repr,
    )
    def test_invalid_channel_name_107(self, alice: Client, channel: str, message: str) -> None:
        # As Centrifugo answers a channel over its length limit; the message says the rule.
        assert alice.send({"id": 2, "subscribe": {"channel": channel}}) == [
            error(2, 107, message)
        ]
        assert alice.session.close_code is None and alice.session.channels == set()

    def test_longest_channel_name_is_accepted(self, alice: Client) -> None:
        assert "subscribe" in alice.send({"id": 2, "subscribe": {"channel": "ü" * 127 + "x"}})[0]

    @pytest.mark.parametrize(
        "frame",
        [
            b'{"id":2,"subscribe":{"channel":"\\ud800"}}',
            b'{"id":2,"subscribe":{"channel":"a\xffb"}}',
            '{"id":2,"subscribe":{"channel":"\ud800"}}',
        ],
        ids=["escaped-lone-surrogate", "raw-invalid-utf8", "str-lone-surrogate"],
    )
    def test_invalid_utf8_in_a_frame_closes_3501(self, alice: Client, frame: str | bytes) -> None:
        # The JSON decoder refuses the frame whole, as it refuses any frame that is not JSON.
        assert alice.raw(frame) == []
        assert alice.session.close_code == DisconnectCode.BAD_REQUEST
        assert alice.session.channels == set()

    @pytest.mark.parametrize("body", [{}, {"channel": ""}, {"channel": 5}, {"channel": None}])
    def test_missing_or_bad_channel_107(self, alice: Client, body: dict[str, Any]) -> None:
        reply = alice.send({"id": 2, "subscribe": body})[0]
        assert reply["id"] == 2 and reply["error"]["code"] == 107
        assert alice.session.close_code is None

    def test_closed_namespace_103(self, alice: Client) -> None:
        assert alice.send({"id": 2, "subscribe": {"channel": "closed:x"}}) == [
            error(2, 103, "permission denied")
        ]

    @pytest.mark.parametrize("channel", ["$secret", "nohistory:$secret", "private:room"])
    def test_private_channel_needs_a_token(self, alice: Client, channel: str) -> None:
        assert alice.send({"id": 2, "subscribe": {"channel": channel}}) == [
            error(2, 103, "permission denied")
        ]

    @pytest.mark.parametrize("channel", ["$secret#alice", "private:room#alice"])
    def test_private_user_limited_channel_still_needs_a_token(
        self, alice: Client, channel: str
    ) -> None:
        # "$" and require_subscription_token always ask for a token, "#alice" or not.
        assert alice.send({"id": 2, "subscribe": {"channel": channel}}) == [
            error(2, 103, "permission denied")
        ]
        tok = token(channel=channel)
        assert (
            "subscribe" in alice.send({"id": 3, "subscribe": {"channel": channel, "token": tok}})[0]
        )

    @pytest.mark.parametrize("channel", ["$secret", "private:room"])
    def test_private_channel_with_a_sub_token(self, alice: Client, channel: str) -> None:
        tok = token(channel=channel, exp=int(WALL) + 300)
        reply = alice.send({"id": 2, "subscribe": {"channel": channel, "token": tok}})[0]
        assert reply == {
            "id": 2,
            "subscribe": {
                "recoverable": True,
                "positioned": True,
                "epoch": "ep1",
                "offset": 0,
                "expires": True,
                "ttl": 300,
            },
        }

    def test_sub_token_without_expiry(self, alice: Client) -> None:
        reply = alice.send({"id": 2, "subscribe": {"channel": "$s", "token": token(channel="$s")}})[
            0
        ]
        assert "expires" not in reply["subscribe"]

    def test_sub_token_bound_to_this_client(self, alice: Client) -> None:
        tok = token(channel="$s", client=alice.session.client_id)
        assert "subscribe" in alice.send({"id": 2, "subscribe": {"channel": "$s", "token": tok}})[0]

    @pytest.mark.parametrize(
        "claims",
        [
            {"channel": "$other"},
            {"channel": "$s", "sub_override": "bob"},
            {"channel": "$s", "client": "another-client"},
            {"channel": "$s", "secret": "wrong-secret-0123456789abcdefghij"},
            {},  # a connection token is no subscription token
        ],
        ids=["other-channel", "other-user", "other-client", "bad-signature", "no-channel"],
    )
    def test_sub_token_refused_103(self, alice: Client, claims: dict[str, Any]) -> None:
        claims = dict(claims)
        sub = claims.pop("sub_override", "alice")
        tok = token(sub, **claims)
        assert alice.send({"id": 2, "subscribe": {"channel": "$s", "token": tok}}) == [
            error(2, 103, "permission denied")
        ]
        assert alice.session.channels == set()

    def test_expired_sub_token_109(self, alice: Client) -> None:
        tok = token(channel="$s", exp=int(WALL) - 5)
        assert alice.send({"id": 2, "subscribe": {"channel": "$s", "token": tok}}) == [
            error(2, 109, "token expired")
        ]
        assert alice.session.close_code is None

    def test_sub_token_opens_a_user_limited_channel_of_another_user(self, alice: Client) -> None:
        # The issuer signed it for alice on this channel: the token is the permission.
        tok = token(channel="user#bob")
        assert (
            "subscribe"
            in alice.send({"id": 2, "subscribe": {"channel": "user#bob", "token": tok}})[0]
        )

    def test_already_subscribed_105(self, alice: Client, host: FakeHost) -> None:
        alice.send({"id": 2, "subscribe": {"channel": "news"}})
        assert alice.send({"id": 3, "subscribe": {"channel": "news"}}) == [
            error(3, 105, "already subscribed")
        ]
        assert host.hub.subscribers("news") == 1

    def test_too_many_subscriptions_106(self) -> None:
        host = FakeHost(settings(client=ClientSettings(max_subscriptions=2)))
        c = Client(host)
        c.connect()
        c.send({"id": 2, "subscribe": {"channel": "a"}}, {"id": 3, "subscribe": {"channel": "b"}})
        assert c.send({"id": 4, "subscribe": {"channel": "c"}}) == [
            error(4, 106, "too many subscriptions (client.max_subscriptions)")
        ]
        c.send({"id": 5, "unsubscribe": {"channel": "a"}})
        assert "subscribe" in c.send({"id": 6, "subscribe": {"channel": "c"}})[0]

    def test_anonymous_connection(self) -> None:
        c = Client(FakeHost(anonymous=True))
        c.connect("")
        assert c.send({"id": 2, "subscribe": {"channel": "news"}}) == [
            error(2, 103, "permission denied")
        ]
        assert "subscribe" in c.send({"id": 3, "subscribe": {"channel": "public:news"}})[0]
        assert c.send({"id": 4, "subscribe": {"channel": "public:x#"}})[0]["error"]["code"] == 107

    def test_recovery_gives_what_was_missed(self, alice: Client, host: FakeHost) -> None:
        for n in range(1, 4):
            host.publish("news", {"n": n})
        out = alice.raw(
            b'{"id":2,"subscribe":{"channel":"news","recover":true,"offset":1,"epoch":"ep1"}}'
        )
        assert out == [
            b'{"id":2,"subscribe":{"recoverable":true,"positioned":true,"epoch":"ep1","offset":3,'
            b'"was_recovering":true,"recovered":true,"publications":'
            b'[{"data":{"n":2},"offset":2},{"data":{"n":3},"offset":3}]}}'
        ]

    def test_recovery_at_the_top_has_no_publications(self, alice: Client, host: FakeHost) -> None:
        host.publish("news", {"n": 1})
        reply = alice.send(
            {"id": 2, "subscribe": {"channel": "news", "recover": True, "offset": 1}}
        )[0]["subscribe"]
        assert reply["recovered"] is True and "publications" not in reply

    def test_recovery_from_another_epoch_fails(self, alice: Client, host: FakeHost) -> None:
        host.publish("news", {"n": 1})
        reply = alice.send(
            {"id": 2, "subscribe": {"channel": "news", "recover": True, "offset": 0, "epoch": "x"}}
        )[0]["subscribe"]
        assert reply == {
            "recoverable": True,
            "positioned": True,
            "epoch": "ep1",
            "offset": 1,
            "was_recovering": True,
        }

    def test_recover_false_ignores_the_position(self, alice: Client, host: FakeHost) -> None:
        alice.send({"id": 2, "subscribe": {"channel": "news", "offset": 5, "epoch": "zz"}})
        assert host.subscribe_calls[-1][2] is None


# ---------------------------------------------------------------------------- server-side subs
class TestServerSideSubscriptions:
    def test_token_channels_are_subscribed_at_connect(self, client: Client, host: FakeHost) -> None:
        result = client.connect(token(channels=["news", "user#alice", "nohistory:x"]))
        assert result["subs"] == {
            "news": {"recoverable": True, "positioned": True, "epoch": "ep1", "offset": 0},
            "user#alice": {"recoverable": True, "positioned": True, "epoch": "ep1", "offset": 0},
            "nohistory:x": {},
        }
        assert client.session.server_channels == {"news", "user#alice", "nohistory:x"}
        assert client.session.channels == {"news", "user#alice", "nohistory:x"}
        pub = host.publish("news", 1)
        assert client.sink.pubs == [pub]

    def test_unknown_token_channels_are_skipped(self, client: Client) -> None:
        # A namespace may leave the configuration while tokens naming it are still valid.
        result = client.connect(token(channels=["nowhere:x", "news"]))
        assert set(result["subs"]) == {"news"}

    @pytest.mark.parametrize("channel", ["bad channel", "a\x00", "\ud800", "x" * 256, "u#"])
    def test_invalid_token_channels_refuse_the_token(self, client: Client, channel: str) -> None:
        # Not a namespace gone from the configuration: the issuer made the token wrong.
        assert client.send({"id": 1, "connect": {"token": token(channels=["news", channel])}}) == []
        assert client.session.close_code == DisconnectCode.INVALID_TOKEN

    def test_recovery_through_connect_subs(self, client: Client, host: FakeHost) -> None:
        for n in range(1, 4):
            host.publish("news", {"n": n})
        result = client.connect(
            token(channels=["news"]),
            subs={
                "news": {"recover": True, "offset": 2, "epoch": "ep1"},
                "elsewhere": {"recover": True, "offset": 1},
            },
        )
        assert result["subs"]["news"] == {
            "recoverable": True,
            "positioned": True,
            "epoch": "ep1",
            "offset": 3,
            "was_recovering": True,
            "recovered": True,
            "publications": [{"data": {"n": 3}, "offset": 3}],
        }

    def test_connect_subs_without_recover_are_ignored(self, client: Client, host: FakeHost) -> None:
        client.connect(token(channels=["news"]), subs={"news": {"offset": 2, "epoch": "ep1"}})
        assert host.subscribe_calls[-1][2] is None

    def test_client_cannot_unsubscribe_a_server_side_channel(
        self, client: Client, host: FakeHost
    ) -> None:
        client.connect(token(channels=["news"]))
        assert client.raw(b'{"id":2,"unsubscribe":{"channel":"news"}}') == [
            b'{"id":2,"unsubscribe":{}}'
        ]
        assert client.session.channels == {"news"}
        assert host.hub.subscribers("news") == 1

    def test_client_subscribe_to_a_server_side_channel_is_105(self, client: Client) -> None:
        client.connect(token(channels=["news"]))
        assert client.send({"id": 2, "subscribe": {"channel": "news"}})[0]["error"]["code"] == 105

    def test_too_many_server_side_channels_closes_3505(self, host: FakeHost) -> None:
        host = FakeHost(settings(client=ClientSettings(max_subscriptions=1)))
        c = Client(host)
        assert c.send({"id": 1, "connect": {"token": token(channels=["a", "b"])}}) == []
        assert c.session.close_code == DisconnectCode.CHANNEL_LIMIT
        assert host.hub.subscriptions == 0
        assert host.released == [c.session]


# ---------------------------------------------------------------------------- unsubscribe
class TestUnsubscribe:
    def test_exact_reply_and_bookkeeping(self, alice: Client, host: FakeHost) -> None:
        alice.send({"id": 2, "subscribe": {"channel": "news"}})
        assert alice.raw(b'{"id":3,"unsubscribe":{"channel":"news"}}') == [
            b'{"id":3,"unsubscribe":{}}'
        ]
        assert alice.session.channels == set()
        assert host.hub.subscribers("news") == 0
        host.publish("news", 1)
        assert alice.sink.pubs == []

    def test_unsubscribe_from_a_channel_one_is_not_on(self, alice: Client) -> None:
        assert alice.send({"id": 2, "unsubscribe": {"channel": "news"}}) == [
            {"id": 2, "unsubscribe": {}}
        ]

    def test_resubscribe_after_unsubscribe(self, alice: Client) -> None:
        alice.send({"id": 2, "subscribe": {"channel": "news"}})
        alice.send({"id": 3, "unsubscribe": {"channel": "news"}})
        assert "subscribe" in alice.send({"id": 4, "subscribe": {"channel": "news"}})[0]

    def test_missing_channel_107(self, alice: Client) -> None:
        assert alice.send({"id": 2, "unsubscribe": {}})[0]["error"]["code"] == 107


# ---------------------------------------------------------------------------- refresh
class TestRefresh:
    def test_refresh_gives_a_new_ttl(self) -> None:
        host = FakeHost(settings(client=ClientSettings(ping_interval=1000)))
        c = Client(host)
        c.connect(token(exp=int(WALL) + 60))
        before = c.session.deadline
        out = c.raw(orjson.dumps({"id": 2, "refresh": {"token": token(exp=int(WALL) + 600)}}))
        assert out == [b'{"id":2,"refresh":{"expires":true,"ttl":600}}']
        assert c.session.deadline == before + 540

    def test_refresh_to_a_token_without_expiry(self, alice: Client) -> None:
        assert alice.raw(orjson.dumps({"id": 2, "refresh": {"token": token()}})) == [
            b'{"id":2,"refresh":{}}'
        ]

    def test_refresh_with_another_users_token_closes_3500(
        self, alice: Client, host: FakeHost
    ) -> None:
        assert alice.send({"id": 2, "refresh": {"token": token("bob")}}) == []
        assert alice.session.close_code == DisconnectCode.INVALID_TOKEN
        assert host.released == [alice.session]

    def test_refresh_with_an_expired_token_closes_3005(self, alice: Client) -> None:
        assert alice.send({"id": 2, "refresh": {"token": token(exp=int(WALL) - 1)}}) == []
        assert alice.session.close_code == DisconnectCode.EXPIRED

    def test_refresh_with_an_invalid_token_closes_3500(self, alice: Client) -> None:
        assert alice.send({"id": 2, "refresh": {"token": "junk"}}) == []
        assert alice.session.close_code == DisconnectCode.INVALID_TOKEN

    @pytest.mark.parametrize("body", [{}, {"token": ""}, {"token": 3}])
    def test_refresh_without_a_token_107(self, alice: Client, body: dict[str, Any]) -> None:
        assert alice.send({"id": 2, "refresh": body})[0]["error"]["code"] == 107
        assert alice.session.close_code is None


class TestSubRefresh:
    def subscribed(self, alice: Client) -> None:
        tok = token(channel="$s", exp=int(WALL) + 60)
        assert "subscribe" in alice.send({"id": 2, "subscribe": {"channel": "$s", "token": tok}})[0]

    def test_sub_refresh_gives_a_new_ttl(self, alice: Client) -> None:
        self.subscribed(alice)
        tok = token(channel="$s", exp=int(WALL) + 900)
        out = alice.raw(orjson.dumps({"id": 3, "sub_refresh": {"channel": "$s", "token": tok}}))
        assert out == [b'{"id":3,"sub_refresh":{"expires":true,"ttl":900}}']

    def test_sub_refresh_to_no_expiry_clears_it(self, alice: Client) -> None:
        self.subscribed(alice)
        tok = token(channel="$s")
        assert alice.send({"id": 3, "sub_refresh": {"channel": "$s", "token": tok}}) == [
            {"id": 3, "sub_refresh": {}}
        ]
        # No subscription expiry is left: a tick long after 60 s does not close with 3006.
        alice.tick(T0 + 24.0)
        alice.raw(b"{}", T0 + 24.5)
        alice.tick(T0 + 90.0)
        assert alice.session.close_code != DisconnectCode.SUBSCRIPTION_EXPIRED

    def test_sub_refresh_of_a_channel_not_subscribed_103(self, alice: Client) -> None:
        tok = token(channel="$s")
        assert alice.send({"id": 3, "sub_refresh": {"channel": "$s", "token": tok}}) == [
            error(3, 103, "not subscribed")
        ]

    def test_sub_refresh_with_a_bad_token_103(self, alice: Client) -> None:
        self.subscribed(alice)
        tok = token(channel="$other")
        assert alice.send({"id": 3, "sub_refresh": {"channel": "$s", "token": tok}}) == [
            error(3, 103, "permission denied")
        ]
        assert alice.session.close_code is None

    def test_sub_refresh_with_an_expired_token_closes_3006(self, alice: Client) -> None:
        self.subscribed(alice)
        tok = token(channel="$s", exp=int(WALL) - 1)
        assert alice.send({"id": 3, "sub_refresh": {"channel": "$s", "token": tok}}) == []
        assert alice.session.close_code == DisconnectCode.SUBSCRIPTION_EXPIRED

    @pytest.mark.parametrize(
        "body", [{"channel": "$s"}, {"token": "t"}, {"channel": 1, "token": "t"}]
    )
    def test_sub_refresh_bad_request_107(self, alice: Client, body: dict[str, Any]) -> None:
        assert alice.send({"id": 3, "sub_refresh": body})[0]["error"]["code"] == 107


# ---------------------------------------------------------------------------- other methods
class TestOtherMethods:
    @pytest.mark.parametrize("method", ["rpc", "ping"])
    def test_unsupported_methods_108(self, alice: Client, method: str) -> None:
        out = alice.raw(orjson.dumps({"id": 7, method: {"channel": "news", "data": {}}}))
        assert out == [b'{"id":7,"error":{"code":108,"message":"not available"}}']
        assert alice.session.close_code is None

    def test_unknown_method_104(self, alice: Client) -> None:
        out = alice.raw(b'{"id":8,"teleport":{"to":"mars"}}')
        assert out == [b'{"id":8,"error":{"code":104,"message":"method not found"}}']
        assert alice.session.close_code is None

    def test_unknown_method_without_id_is_silent(self, alice: Client) -> None:
        assert alice.raw(b'{"teleport":{}}') == []
        assert alice.session.close_code is None

    @pytest.mark.parametrize(
        "frame", [b'{"send":{"data":{"x":1}}}', b'{"send":{}}', b"{}", b'{"id":0}', b"{}\n{}"]
    )
    def test_send_and_pong_get_no_reply(self, alice: Client, frame: bytes) -> None:
        assert alice.raw(frame) == []
        assert alice.session.close_code is None

    def test_command_with_a_non_object_body_107(self, alice: Client) -> None:
        assert alice.send({"id": 9, "subscribe": "news"}) == [
            error(9, 107, "subscribe must be an object")
        ]

    def test_null_body_is_an_empty_body(self, alice: Client) -> None:
        assert alice.send({"id": 9, "unsubscribe": None}) == [error(9, 107, "channel is required")]


# ---------------------------------------------------------------------------- frames
class TestFrames:
    def test_bad_json_closes_3501(self, alice: Client, host: FakeHost) -> None:
        alice.send({"id": 2, "subscribe": {"channel": "news"}})
        assert alice.raw(b'{"id":3,') == []
        assert alice.session.close_code == DisconnectCode.BAD_REQUEST
        assert host.hub.subscriptions == 0
        assert host.released == [alice.session]

    def test_bad_id_closes_3501(self, alice: Client) -> None:
        alice.raw(b'{"id":-1,"subscribe":{"channel":"news"}}')
        assert alice.session.close_code == DisconnectCode.BAD_REQUEST

    def test_commands_per_frame_limit_closes_3501(self) -> None:
        host = FakeHost(settings(client=ClientSettings(max_commands_per_frame=3)))
        c = Client(host)
        c.connect()
        ok = [{"id": i, "subscribe": {"channel": f"c{i}"}} for i in range(2, 5)]
        assert len(c.send(*ok)) == 3
        too_many = [{"id": i, "subscribe": {"channel": f"d{i}"}} for i in range(5, 9)]
        assert c.send(*too_many) == []  # nothing of an over-long frame is processed
        assert c.session.close_code == DisconnectCode.BAD_REQUEST
        assert host.hub.subscriptions == 0

    def test_blank_lines_are_tolerated(self, client: Client) -> None:
        frame = b"\n" + orjson.dumps({"id": 1, "connect": {"token": token()}}) + b"\n\n \n"
        assert len(client.raw(frame)) == 1
        assert client.session.close_code is None

    def test_str_frames_are_accepted(self, client: Client) -> None:
        assert len(client.raw(orjson.dumps({"id": 1, "connect": {"token": token()}}).decode())) == 1

    def test_a_disconnect_mid_frame_stops_processing(self, alice: Client) -> None:
        replies = alice.send(
            {"id": 2, "subscribe": {"channel": "news"}},
            {"id": 3, "refresh": {"token": token("bob")}},
            {"id": 4, "subscribe": {"channel": "other"}},
        )
        assert [r["id"] for r in replies] == [2]
        assert alice.session.close_code == DisconnectCode.INVALID_TOKEN
        assert alice.session.channels == set()

    def test_output_never_contains_newlines(self, alice: Client, host: FakeHost) -> None:
        host.publish("news", {"text": "line one\nline two"})
        out = alice.raw(
            b'{"id":2,"subscribe":{"channel":"news","recover":true,"offset":0}}\n'
            b'{"id":3,"subscribe":{"channel":"bad\\nname"}}'
        )
        assert len(out) == 2
        assert all(b"\n" not in m for m in out)


# ---------------------------------------------------------------------------- after close
class TestAfterClose:
    def test_nothing_more_is_processed(self, alice: Client, host: FakeHost) -> None:
        alice.session.disconnect(DisconnectCode.FORCE_DISCONNECT)
        assert alice.session.state is SessionState.CLOSED
        assert alice.raw(b'{"id":2,"subscribe":{"channel":"news"}}') == []
        assert alice.raw(b"garbage") == []
        assert alice.tick(T0 + 10_000) == []
        assert alice.session.close_code == DisconnectCode.FORCE_DISCONNECT
        assert alice.session.deadline == float("inf")
        assert host.hub.subscriptions == 0

    def test_first_close_code_wins(self, alice: Client) -> None:
        alice.session.disconnect(DisconnectCode.SHUTDOWN)
        alice.session.disconnect(DisconnectCode.SLOW)
        alice.raw(b"junk")
        assert alice.session.close_code == DisconnectCode.SHUTDOWN

    def test_closed_releases_once_and_drops_subscriptions(
        self, alice: Client, host: FakeHost
    ) -> None:
        alice.send({"id": 2, "subscribe": {"channel": "news"}})
        alice.session.closed()
        alice.session.closed()
        assert host.released == [alice.session]
        assert host.hub.subscriptions == 0
        assert alice.session.close_code is None  # the transport went away by itself

    def test_closed_before_connect_releases_nothing(self, client: Client, host: FakeHost) -> None:
        client.session.closed()
        assert host.released == []
        assert client.session.state is SessionState.CLOSED


# ---------------------------------------------------------------------------- timers
class TestTimers:
    def test_stale_connection_closes_3502(self, client: Client) -> None:
        assert client.session.deadline == T0 + 15
        assert client.tick(T0 + 14.9) == []
        assert client.session.close_code is None
        client.tick(T0 + 15)
        assert client.session.close_code == DisconnectCode.STALE

    def test_connected_session_is_never_stale(self, alice: Client) -> None:
        alice.tick(T0 + 15)
        assert alice.session.close_code is None

    def test_ping_at_the_interval_and_pong_timeout(self, alice: Client) -> None:
        assert alice.session.deadline == T0 + 25
        assert alice.tick(T0 + 24.9) == []
        assert alice.tick(T0 + 25) == [b"{}"]
        assert alice.session.deadline == T0 + 35  # the pong deadline comes first
        assert alice.tick(T0 + 34.9) == []
        assert alice.session.close_code is None
        alice.tick(T0 + 35)
        assert alice.session.close_code == DisconnectCode.NO_PONG

    def test_pong_clears_the_deadline(self, alice: Client) -> None:
        assert alice.tick(T0 + 25) == [b"{}"]
        assert alice.raw(b"{}", T0 + 26) == []
        assert alice.session.deadline == T0 + 50
        assert alice.tick(T0 + 40) == []
        assert alice.session.close_code is None
        assert alice.tick(T0 + 50) == [b"{}"]
        alice.raw(b"{}", T0 + 51)
        assert alice.tick(T0 + 75) == [b"{}"]
        assert alice.session.close_code is None

    def test_any_other_command_is_no_pong(self, alice: Client) -> None:
        alice.tick(T0 + 25)
        alice.send({"id": 2, "subscribe": {"channel": "news"}}, at=T0 + 26)
        alice.tick(T0 + 35)
        assert alice.session.close_code == DisconnectCode.NO_PONG

    def test_connection_token_expiry_closes_3005_after_the_delay(self) -> None:
        host = FakeHost(settings(client=ClientSettings(ping_interval=1000)))
        c = Client(host)
        c.connect(token(exp=int(WALL) + 60))
        assert c.session.deadline == T0 + 85
        c.tick(T0 + 84.9)
        assert c.session.close_code is None
        c.tick(T0 + 85)
        assert c.session.close_code == DisconnectCode.EXPIRED
        assert host.released == [c.session]

    def test_refresh_postpones_the_expiry(self) -> None:
        host = FakeHost(settings(client=ClientSettings(ping_interval=1000)))
        c = Client(host)
        c.connect(token(exp=int(WALL) + 60))
        c.send({"id": 2, "refresh": {"token": token(exp=int(WALL) + 600)}}, at=T0 + 50)
        c.tick(T0 + 85)
        assert c.session.close_code is None
        c.tick(T0 + 625)
        assert c.session.close_code == DisconnectCode.EXPIRED

    def test_subscription_expiry_closes_3006(self) -> None:
        host = FakeHost(settings(client=ClientSettings(ping_interval=1000, expired_close_delay=5)))
        c = Client(host)
        c.connect()
        tok = token(channel="$s", exp=int(WALL) + 30)
        c.send({"id": 2, "subscribe": {"channel": "$s", "token": tok}})
        assert c.session.deadline == T0 + 35
        c.tick(T0 + 34.9)
        assert c.session.close_code is None
        c.tick(T0 + 35)
        assert c.session.close_code == DisconnectCode.SUBSCRIPTION_EXPIRED

    def test_unsubscribe_forgets_the_subscription_expiry(self) -> None:
        host = FakeHost(settings(client=ClientSettings(ping_interval=1000, expired_close_delay=5)))
        c = Client(host)
        c.connect()
        tok = token(channel="$s", exp=int(WALL) + 30)
        c.send({"id": 2, "subscribe": {"channel": "$s", "token": tok}})
        c.send({"id": 3, "unsubscribe": {"channel": "$s"}})
        assert c.session.deadline == T0 + 1000
        c.tick(T0 + 100)
        assert c.session.close_code is None

    def test_sub_refresh_postpones_the_subscription_expiry(self) -> None:
        host = FakeHost(settings(client=ClientSettings(ping_interval=1000, expired_close_delay=5)))
        c = Client(host)
        c.connect()
        c.send(
            {
                "id": 2,
                "subscribe": {"channel": "$s", "token": token(channel="$s", exp=int(WALL) + 30)},
            }
        )
        tok = token(channel="$s", exp=int(WALL) + 300)
        c.send({"id": 3, "sub_refresh": {"channel": "$s", "token": tok}}, at=T0 + 20)
        c.tick(T0 + 100)
        assert c.session.close_code is None
        assert c.session.deadline == T0 + 305


# ---------------------------------------------------------------------------- unidirectional
class TestUnidirectional:
    def test_connect_output_shape(self, host: FakeHost) -> None:
        c = Client(host, bidirectional=False)
        c.session.connect_unidirectional(ConnectRequest(token=token()), T0)
        out = c.session.take_output()
        assert out == [
            b'{"connect":{"client":"%s","version":"%s","ping":25}}'
            % (c.session.client_id.encode(), __version__.encode())
        ]

    def test_server_side_subs_and_recovery(self, host: FakeHost) -> None:
        host.publish("news", {"n": 1})
        host.publish("news", {"n": 2})
        c = Client(host, bidirectional=False)
        request = ConnectRequest(
            token=token(channels=["news"], exp=int(WALL) + 100),
            subs={"news": RecoverPosition(1, "ep1")},
        )
        c.session.connect_unidirectional(request, T0)
        (message,) = c.session.take_output()
        assert orjson.loads(message) == {
            "connect": {
                "client": c.session.client_id,
                "version": __version__,
                "ping": 25,
                "subs": {
                    "news": {
                        "recoverable": True,
                        "positioned": True,
                        "epoch": "ep1",
                        "offset": 2,
                        "was_recovering": True,
                        "recovered": True,
                        "publications": [{"data": {"n": 2}, "offset": 2}],
                    }
                },
                "expires": True,
                "ttl": 100,
            }
        }

    def test_pings_expect_no_pong(self, host: FakeHost) -> None:
        c = Client(host, bidirectional=False)
        c.session.connect_unidirectional(ConnectRequest(token=token()), T0)
        c.session.take_output()
        assert c.tick(T0 + 25) == [b"{}"]
        assert c.tick(T0 + 49) == []
        assert c.tick(T0 + 50) == [b"{}"]
        assert c.session.close_code is None

    @pytest.mark.parametrize(
        ("tok", "code"),
        [
            ("junk", DisconnectCode.INVALID_TOKEN),
            ("", DisconnectCode.INVALID_TOKEN),
            # Final for a push-only client: it would retry the same token forever.
            (token(exp=int(WALL) - 5), DisconnectCode.INVALID_TOKEN),
        ],
    )
    def test_refused(self, host: FakeHost, tok: str, code: DisconnectCode) -> None:
        c = Client(host, bidirectional=False)
        c.session.connect_unidirectional(ConnectRequest(token=tok), T0)
        assert c.session.take_output() == []
        assert c.session.close_code == code

    def test_second_connect_is_ignored(self, host: FakeHost) -> None:
        c = Client(host, bidirectional=False)
        c.session.connect_unidirectional(ConnectRequest(token=token()), T0)
        c.session.connect_unidirectional(ConnectRequest(token=token("bob")), T0)
        assert len(c.session.take_output()) == 1
        assert c.session.user == "alice"
        assert host.admitted == [c.session]


def test_secret_is_long_enough() -> None:
    assert len(SECRET.encode()) >= 32


# ---------------------------------------------------------------------------- history
def history_host(*, insecure: bool = False, anonymous: bool = False) -> FakeHost:
    """Namespaces for every history permission: subscribers only, any client, neither, off."""
    return FakeHost(
        settings(
            client=ClientSettings(insecure=insecure, history_max_limit=3),
            namespaces=[
                NamespaceSettings(name="subs", allow_history_for_subscriber=True),
                NamespaceSettings(
                    name="any", allow_history_for_client=True, allow_anonymous=anonymous
                ),
                NamespaceSettings(name="none"),
                NamespaceSettings(
                    name="off", history_size=0, allow_history_for_subscriber=True
                ),
                NamespaceSettings(
                    name="secret", allow_history_for_client=True, require_subscription_token=True
                ),
            ],
        ),
        anonymous=anonymous,
    )


class TestHistory:
    @pytest.fixture
    def hhost(self) -> FakeHost:
        host = history_host()
        for n in range(1, 6):
            host.publish("any:feed", {"n": n})
            host.publish("subs:feed", {"n": n})
        return host

    @pytest.fixture
    def bob(self, hhost: FakeHost) -> Client:
        c = Client(hhost)
        c.connect(token("bob"))
        return c

    def history(self, c: Client, **body: Any) -> dict[str, Any]:
        reply = c.send({"id": 9, "history": body})
        assert len(reply) == 1 and reply[0]["id"] == 9, reply
        return reply[0]

    def test_exact_reply(self, bob: Client, hhost: FakeHost) -> None:
        out = bob.raw(b'{"id":9,"history":{"channel":"any:feed","limit":2}}')
        assert out == [
            b'{"id":9,"history":{"epoch":"ep1","offset":10,"publications":'
            b'[{"data":{"n":1},"offset":1},{"data":{"n":2},"offset":3}]}}'
        ]

    def test_limit_zero_gives_the_position_only(self, bob: Client) -> None:
        assert self.history(bob, channel="any:feed") == {
            "id": 9,
            "history": {"epoch": "ep1", "offset": 10},
        }

    @pytest.mark.parametrize("limit", [-1, 100])
    def test_limit_is_capped_by_the_client_setting(self, bob: Client, limit: int) -> None:
        pubs = self.history(bob, channel="any:feed", limit=limit)["history"]["publications"]
        assert [p["offset"] for p in pubs] == [1, 3, 5]

    def test_reverse(self, bob: Client) -> None:
        pubs = self.history(bob, channel="any:feed", limit=2, reverse=True)["history"]
        assert [p["data"]["n"] for p in pubs["publications"]] == [5, 4]

    def test_since(self, bob: Client) -> None:
        since = {"offset": 5, "epoch": "ep1"}
        result = self.history(bob, channel="any:feed", limit=-1, since=since)
        assert [p["offset"] for p in result["history"]["publications"]] == [7, 9]

    def test_since_reverse_reads_older_ones(self, bob: Client) -> None:
        result = self.history(
            bob, channel="any:feed", limit=2, reverse=True, since={"offset": 7, "epoch": ""}
        )
        assert [p["offset"] for p in result["history"]["publications"]] == [5, 3]

    def test_since_at_the_top_is_empty(self, bob: Client) -> None:
        result = self.history(bob, channel="any:feed", limit=5, since={"offset": 10})
        assert result["history"] == {"epoch": "ep1", "offset": 10}

    def test_since_another_epoch_112(self, bob: Client) -> None:
        result = self.history(bob, channel="any:feed", limit=5, since={"offset": 3, "epoch": "x"})
        assert result == error(9, 112, "unrecoverable position")

    def test_since_before_what_is_held_112(self, hhost: FakeHost) -> None:
        small = FakeHost(
            settings(
                namespaces=[
                    NamespaceSettings(name="any", history_size=2, allow_history_for_client=True)
                ]
            )
        )
        for n in range(4):
            small.publish("any:feed", n)
        c = Client(small)
        c.connect(token("bob"))
        assert self.history(c, channel="any:feed", limit=5, since={"offset": 1})["error"] == {
            "code": 112,
            "message": "unrecoverable position",
        }
        ok = self.history(c, channel="any:feed", limit=5, since={"offset": 2})["history"]
        assert [p["offset"] for p in ok["publications"]] == [3, 4]

    def test_reverse_since_zero_is_a_bad_request(self, bob: Client) -> None:
        result = self.history(bob, channel="any:feed", reverse=True, since={"offset": 0})
        assert result["error"]["code"] == 107

    def test_subscriber_only_namespace(self, bob: Client) -> None:
        assert self.history(bob, channel="subs:feed", limit=1) == error(
            9, 103, "permission denied"
        )
        bob.send({"id": 2, "subscribe": {"channel": "subs:feed"}})
        pubs = self.history(bob, channel="subs:feed", limit=1)["history"]["publications"]
        assert pubs == [{"data": {"n": 1}, "offset": 2}]

    def test_not_allowed_by_default(self, bob: Client) -> None:
        bob.send({"id": 2, "subscribe": {"channel": "none:feed"}})
        assert self.history(bob, channel="none:feed") == error(9, 103, "permission denied")

    def test_history_off_108(self, bob: Client) -> None:
        bob.send({"id": 2, "subscribe": {"channel": "off:feed"}})
        assert self.history(bob, channel="off:feed") == error(
            9, 108, "history is off for this channel"
        )

    def test_unknown_namespace_102(self, bob: Client) -> None:
        assert self.history(bob, channel="nope:feed")["error"]["code"] == 102

    @pytest.mark.parametrize("channel", ["any:user#alice", "secret:feed", "any:$x"])
    def test_for_client_never_opens_what_subscribing_refuses(
        self, bob: Client, channel: str
    ) -> None:
        assert self.history(bob, channel=channel)["error"]["code"] == 103

    def test_for_client_on_ones_own_user_channel(self, bob: Client) -> None:
        assert "history" in self.history(bob, channel="any:user#bob")

    def test_anonymous_only_where_the_namespace_allows_it(self) -> None:
        for anonymous, expected in ((False, 103), (True, None)):
            c = Client(history_host(anonymous=anonymous))
            c.connect(token(""))
            reply = self.history(c, channel="any:feed")
            assert reply.get("error", {}).get("code") == expected

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"channel": "any:feed", "limit": "5"},
            {"channel": "any:feed", "limit": 2**31},
            {"channel": "any:feed", "since": 5},
            {"channel": "any:feed", "since": {"offset": -1}},
            {"channel": "any:feed", "reverse": "yes"},
        ],
    )
    def test_bad_request_107(self, bob: Client, body: dict[str, Any]) -> None:
        assert self.history(bob, **body)["error"]["code"] == 107
        assert bob.session.close_code is None


# ---------------------------------------------------------------------------- insecure mode
class TestInsecure:
    def test_connect_without_a_token(self) -> None:
        c = Client(history_host(insecure=True))
        c.connect("")
        assert c.session.user == ""

    def test_a_token_still_names_the_user(self) -> None:
        c = Client(history_host(insecure=True))
        c.connect(token("carol"))
        assert c.session.user == "carol"

    @pytest.mark.parametrize("channel", ["$secret", "secret:feed", "user#alice", "none:x"])
    def test_subscribe_anywhere(self, channel: str) -> None:
        c = Client(history_host(insecure=True))
        c.connect("")
        reply = c.send({"id": 2, "subscribe": {"channel": channel}})
        assert "subscribe" in reply[0], reply

    def test_history_anywhere(self) -> None:
        c = Client(history_host(insecure=True))
        c.connect("")
        assert "history" in c.send({"id": 2, "history": {"channel": "none:x"}})[0]

    def test_unknown_namespaces_stay_unknown(self) -> None:
        c = Client(history_host(insecure=True))
        c.connect("")
        assert c.send({"id": 2, "subscribe": {"channel": "nope:x"}})[0]["error"]["code"] == 102

    def test_off_by_default(self) -> None:
        c = Client(history_host())
        assert c.send({"id": 1, "connect": {}}) == []
        assert c.session.close_code == DisconnectCode.INVALID_TOKEN


# ---------------------------------------------------------------------------- anonymous tokens
class TestAnonymousToken:
    @pytest.mark.parametrize("sub", ["", None])
    def test_empty_or_missing_sub_connects_anonymously(
        self, client: Client, sub: str | None
    ) -> None:
        client.connect(token(sub))
        assert client.session.user == ""
        assert client.session.close_code is None

    def test_anonymous_subscribes_only_where_allowed(self, client: Client) -> None:
        client.connect(token(""))
        assert client.send({"id": 2, "subscribe": {"channel": "news"}})[0]["error"]["code"] == 103
        assert "subscribe" in client.send({"id": 3, "subscribe": {"channel": "public:x"}})[0]

    def test_server_side_channels_of_an_anonymous_token(self, client: Client) -> None:
        result = client.connect(token("", channels=["news"]))
        assert "news" in result["subs"]


# ---------------------------------------------------------------------------- server API commands
class TestServerCommands:
    def test_server_subscribe_pushes_and_holds_the_channel(self, alice: Client) -> None:
        assert alice.session.server_subscribe("news") is True
        assert [orjson.loads(m) for m in alice.session.take_output()] == [
            {
                "push": {
                    "channel": "news",
                    "subscribe": {
                        "recoverable": True,
                        "positioned": True,
                        "epoch": "ep1",
                        "offset": 0,
                    },
                }
            }
        ]
        alice.host.publish("news", 1)
        assert [p.channel for p in alice.sink.pubs] == ["news"]
        # The client cannot leave a server-side subscription.
        alice.send({"id": 4, "unsubscribe": {"channel": "news"}})
        assert alice.host.hub.subscribers("news") == 1

    def test_server_subscribe_skips_what_it_cannot_do(self, alice: Client) -> None:
        alice.send({"id": 2, "subscribe": {"channel": "news"}})
        assert alice.session.server_subscribe("news") is False
        assert alice.session.server_subscribe("nope:x") is False
        assert alice.session.take_output() == []

    def test_server_subscribe_respects_max_subscriptions(self) -> None:
        c = Client(FakeHost(settings(client=ClientSettings(max_subscriptions=1))))
        c.connect(token(channels=["news"]))
        assert c.session.server_subscribe("other") is False

    def test_server_unsubscribe(self, alice: Client) -> None:
        alice.send({"id": 2, "subscribe": {"channel": "news"}})
        assert alice.session.server_unsubscribe("news") is True
        assert alice.session.take_output() == [
            b'{"push":{"channel":"news","unsubscribe":{"code":2000,"reason":"server"}}}'
        ]
        assert alice.host.hub.subscribers("news") == 0
        assert alice.session.server_unsubscribe("news") is False

    def test_unidirectional_pushes_have_no_wrapper(self, host: FakeHost) -> None:
        c = Client(host, bidirectional=False)
        c.session.connect_unidirectional(ConnectRequest(token=token()), T0)
        c.session.take_output()
        c.session.server_subscribe("news")
        assert orjson.loads(c.session.take_output()[0])["channel"] == "news"

    def test_server_refresh_expired_closes_3005(self, alice: Client) -> None:
        alice.session.server_refresh(True, 0)
        assert alice.session.close_code == DisconnectCode.EXPIRED

    def test_server_refresh_sets_the_expiry(self, alice: Client) -> None:
        alice.session.server_refresh(False, int(WALL) + 60)
        grace = alice.host.settings.client.expired_close_delay
        alice.send({}, at=T0 + 60 + grace - 2)  # a pong, so no pong timeout interferes
        alice.tick(T0 + 60 + grace - 1)
        assert alice.session.close_code is None
        alice.tick(T0 + 60 + grace + 1)
        assert alice.session.close_code == DisconnectCode.EXPIRED
