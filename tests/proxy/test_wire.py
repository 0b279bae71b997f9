"""Centrifugo's proxy JSON: request bodies and the decoding of every kind of answer."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from tidings.protocol.messages import ConnectRequest, SubscribeRequest
from tidings.protocol.operations import (
    Answered,
    Approved,
    ConnectCall,
    Connected,
    Disconnected,
    Operation,
    Peer,
    ProxyPublishCall,
    PublishCall,
    RefreshCall,
    Refreshed,
    Rejected,
    RpcCall,
    SubscribeCall,
    Subscribed,
)
from tidings.proxy.wire import BadAnswer, decode_answer, encode_request, event_of

PEER = Peer("websocket", "10.0.0.1", (("cookie", "s=1"),))
CONNECT = ConnectCall(1, "c1", "", None, ConnectRequest(name="js", version="5", data=b'{"a":1}'))
REFRESH = RefreshCall(2, "c1", "bob", b'{"m":1}')
SUBSCRIBE = SubscribeCall(3, "c1", "bob", None, SubscribeRequest("news", data=b"[1]"), 4)
RPC = RpcCall(4, "c1", "bob", b"{}", "sum", b"[1,2]", 5)
PUBLISH = ProxyPublishCall(5, "c1", "bob", None, "chat", b'{"t":"hi"}', b'{"name":"Bob"}', 6)


def answer(op: Operation, obj: Any) -> Any:
    return decode_answer(op, orjson.dumps(obj))


class TestRequests:
    def test_connect(self) -> None:
        assert orjson.loads(encode_request(CONNECT, PEER)) == {
            "client": "c1",
            "transport": "websocket",
            "protocol": "json",
            "encoding": "json",
            "name": "js",
            "version": "5",
            "data": {"a": 1},
        }

    def test_refresh_carries_user_and_meta(self) -> None:
        body = orjson.loads(encode_request(REFRESH, PEER))
        assert (body["user"], body["meta"]) == ("bob", {"m": 1})
        assert "data" not in body

    def test_subscribe(self) -> None:
        body = orjson.loads(encode_request(SUBSCRIBE, PEER))
        assert (body["user"], body["channel"], body["data"]) == ("bob", "news", [1])
        assert "meta" not in body

    def test_rpc(self) -> None:
        body = orjson.loads(encode_request(RPC, PEER))
        assert (body["method"], body["data"], body["meta"]) == ("sum", [1, 2], {})

    def test_publish(self) -> None:
        body = orjson.loads(encode_request(PUBLISH, PEER))
        assert (body["user"], body["channel"], body["data"], body["info"]) == (
            "bob",
            "chat",
            {"t": "hi"},
            {"name": "Bob"},
        )

    def test_events(self) -> None:
        assert [event_of(op) for op in (CONNECT, REFRESH, SUBSCRIBE, RPC, PUBLISH)] == [
            "connect",
            "refresh",
            "subscribe",
            "rpc",
            "publish",
        ]
        with pytest.raises(ValueError):
            event_of(PublishCall(6, "c1", "bob", None, "chat", b"1", b"{}"))

    def test_peer_keeps_the_allowed_headers_only(self) -> None:
        peer = Peer.of("sse", "::1", {"Cookie": "a", "X-Other": "b"}, ["cookie", "Authorization"])
        assert peer == Peer("sse", "::1", (("cookie", "a"),))


class TestAnswers:
    def test_connect_result(self) -> None:
        result = {
            "user": "56",
            "expire_at": 1_900_000_000,
            "info": {"name": "Ann"},
            "b64data": base64.b64encode(b'{\n "x": 1\n}').decode(),
            "channels": ["news"],
            "subs": {"news": {}, "alerts": {"data": {"n": 2}}},
            "meta": {"tenant": 7},
        }
        assert answer(CONNECT, {"result": result}) == Connected(
            "56",
            1_900_000_000,
            b'{"name":"Ann"}',
            b'{"x":1}',  # compact: a message stays on one line
            ("news", "alerts"),
            (("alerts", b'{"n":2}'),),
            b'{"tenant":7}',
        )

    def test_connect_without_a_result_is_anonymous(self) -> None:
        assert answer(CONNECT, {}) == Connected("")

    def test_error_and_disconnect_win_over_result(self) -> None:
        assert answer(SUBSCRIBE, {"error": {"code": 1000, "message": "no"}, "result": {}}) == (
            Rejected(1000, "no", False)
        )
        assert answer(RPC, {"disconnect": {"code": 4500, "reason": "bye"}}) == Disconnected(
            4500, "bye"
        )
        assert answer(RPC, {"error": {"code": 1, "temporary": True}}) == Rejected(1, "", True)

    def test_refresh(self) -> None:
        assert answer(REFRESH, {"result": {"expire_at": 5, "b64info": "WzFd"}}) == Refreshed(
            False, 5, b"[1]"
        )
        assert answer(REFRESH, {"result": {"expired": True}}) == Refreshed(True)
        assert answer(REFRESH, {}) == Refreshed(expired=True)

    def test_publish_answer(self) -> None:
        assert answer(PUBLISH, {"result": {"data": {"t": "HI"}}}) == Approved(b'{"t":"HI"}')
        assert answer(PUBLISH, {"result": {"skip_history": True}}) == Approved()
        assert answer(PUBLISH, {"error": {"code": 1003}}) == Rejected(1003, "")

    def test_subscribe_and_rpc(self) -> None:
        assert answer(SUBSCRIBE, {"result": {"data": "hi"}}) == Subscribed(b'"hi"')
        assert answer(SUBSCRIBE, {"result": {}}) == Subscribed()
        assert answer(SUBSCRIBE, {"result": {"info": {"role": "editor"}}}) == Subscribed(
            None, b'{"role":"editor"}'
        )
        assert answer(RPC, {"result": {"data": {"sum": 3}}}) == Answered(b'{"sum":3}')

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[1]",
            b'{"result": 1}',
            b'{"error": {"code": "x"}}',
            b'{"error": {"code": -1}}',
            b'{"error": 5}',
            b'{"disconnect": {"code": 1000}}',
            b'{"disconnect": {"code": 4000, "reason": 1}}',
            b'{"result": {"user": 42}}',
            b'{"result": {"user": "a\\u0000b"}}',
            b'{"result": {"expire_at": "soon"}}',
            b'{"result": {"expire_at": -1}}',
            b'{"result": {"channels": "news"}}',
            b'{"result": {"channels": [""]}}',
            b'{"result": {"subs": {"news": 1}}}',
            b'{"result": {"b64data": "!!"}}',
            b'{"result": {"b64info": "bm90IGpzb24="}}',
        ],
    )
    def test_bad_answers(self, body: bytes) -> None:
        with pytest.raises(BadAnswer):
            decode_answer(CONNECT, body)

    def test_bad_refresh_answer(self) -> None:
        with pytest.raises(BadAnswer):
            answer(REFRESH, {"result": {"expired": "yes"}})
