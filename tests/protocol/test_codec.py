"""Pure frame decoding and reply encoding."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tidings.codes import ErrorCode
from tidings.protocol import codec
from tidings.protocol.codec import ProtocolError, decode_connect_request, decode_frame
from tidings.protocol.messages import (
    Command,
    ConnectRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RecoverPosition,
    RefreshRequest,
    SubRefreshRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)


def one(obj: Any) -> Command:
    (command,) = decode_frame(orjson.dumps(obj), 10)
    return command


# ---------------------------------------------------------------------------- framing
class TestFrames:
    def test_newline_batching_keeps_order(self) -> None:
        frame = (
            b'{"connect":{"token":"T","data":{"a":1},"name":"js"},"id":1}\n'
            b'{"subscribe":{"channel":"ch1","flag":1},"id":2}'
        )
        commands = decode_frame(frame, 10)
        assert [(c.id, c.method) for c in commands] == [(1, "connect"), (2, "subscribe")]
        assert commands[0].request == ConnectRequest(token="T", name="js", data=b'{"a":1}')
        assert commands[1].request == SubscribeRequest("ch1")

    @pytest.mark.parametrize(
        "frame", [b"", b"\n", b"\n\n", b"  \n\t\n", b"\r\n", "", " "], ids=repr
    )
    def test_blank_frames_hold_no_command(self, frame: bytes | str) -> None:
        assert decode_frame(frame, 10) == []

    def test_blank_lines_are_tolerated(self) -> None:
        frame = b'\n{"id":1,"ping":{}}\n\n  \n{"id":2,"ping":{}}\n'
        assert [c.id for c in decode_frame(frame, 10)] == [1, 2]

    def test_crlf_lines(self) -> None:
        assert [c.id for c in decode_frame(b'{"id":1}\r\n{"id":2}\r\n', 10)] == [1, 2]

    def test_str_and_bytes_decode_alike(self) -> None:
        text = '{"id":1,"subscribe":{"channel":"caf\u00e9 \u2603"}}'
        assert decode_frame(text, 1) == decode_frame(text.encode(), 1)

    def test_max_commands(self) -> None:
        frame = b"\n".join([b"{}"] * 3)
        assert len(decode_frame(frame, 3)) == 3
        with pytest.raises(ProtocolError, match="more than 2"):
            decode_frame(frame, 2)

    def test_blank_lines_do_not_count_towards_the_limit(self) -> None:
        assert len(decode_frame(b"{}\n\n\n\n{}", 2)) == 2

    @pytest.mark.parametrize(
        "frame",
        [
            b"{",
            b'{"id":1,',
            b"nope",
            b"{'id': 1}",
            b'{"id":1}{"id":2}',
            b'{"id":1} x',
            b"\xff\xfe",
            b'{"id":1,"subscribe":{"channel":"\xc3"}}',
            '{"id":1,"subscribe":{"channel":"\ud800"}}',  # lone surrogate
            b"[" * 2000 + b"]" * 2000,
            b"NaN",
            b'{"id": 1e400}',
        ],
        ids=repr,
    )
    def test_not_json_is_a_protocol_error(self, frame: bytes | str) -> None:
        with pytest.raises(ProtocolError):
            decode_frame(frame, 10)

    @pytest.mark.parametrize(
        "line", [b"[]", b"1", b'"connect"', b"null", b"true", b'[{"id":1}]'], ids=repr
    )
    def test_non_object_is_a_protocol_error(self, line: bytes) -> None:
        with pytest.raises(ProtocolError, match="object"):
            decode_frame(line, 10)

    def test_one_bad_line_fails_the_whole_frame(self) -> None:
        with pytest.raises(ProtocolError):
            decode_frame(b'{"id":1,"ping":{}}\n[]', 10)


# ---------------------------------------------------------------------------- ids
class TestIds:
    @pytest.mark.parametrize("cid", [0, 1, 7, 2**32 - 1])
    def test_valid_ids(self, cid: int) -> None:
        assert one({"id": cid, "ping": {}}).id == cid

    def test_missing_id_is_zero(self) -> None:
        assert one({"send": {}}).id == 0

    @pytest.mark.parametrize(
        "cid", [-1, 2**32, 2**63, 1.0, 1.5, "1", True, False, None, [], {}], ids=repr
    )
    def test_bad_ids(self, cid: Any) -> None:
        with pytest.raises(ProtocolError, match="id"):
            one({"id": cid, "ping": {}})


# ---------------------------------------------------------------------------- methods
class TestMethods:
    def test_pong(self) -> None:
        assert one({}) == Command(0, "")
        assert one({"id": 3}) == Command(3, "")

    def test_unknown_method(self) -> None:
        command = one({"id": 4, "teleport": {"x": 1}})
        assert command.method == "?"
        assert command.request is None
        assert command.raw == {"id": 4, "teleport": {"x": 1}}

    def test_publish_keeps_its_data_as_compact_json(self) -> None:
        command = one({"id": 1, "publish": {"channel": "chat:1", "data": {"a": [1, 2], "b": "é"}}})
        assert command.request == PublishRequest("chat:1", orjson.dumps({"a": [1, 2], "b": "é"}))

    def test_publish_data_may_be_any_json_value(self) -> None:
        command = one({"id": 1, "publish": {"channel": "c", "data": None}})
        assert command.request == PublishRequest("c", b"null")

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            ({"channel": "c"}, "data is required"),
            ({"data": 1}, "channel is required"),
            ({"channel": 5, "data": 1}, "channel must be a string"),
        ],
    )
    def test_bad_publish_is_a_command_error(self, body: dict[str, Any], error: str) -> None:
        assert one({"id": 1, "publish": body}).error == error

    @pytest.mark.parametrize(
        ("method", "request_class"),
        [("presence", PresenceRequest), ("presence_stats", PresenceStatsRequest)],
    )
    def test_presence_requests(self, method: str, request_class: type) -> None:
        assert one({"id": 1, method: {"channel": "room:1"}}).request == request_class("room:1")
        assert one({"id": 1, method: {}}).error == "channel is required"

    def test_subscribe_join_leave_flag(self) -> None:
        request = one({"id": 1, "subscribe": {"channel": "c", "join_leave": True}}).request
        assert isinstance(request, SubscribeRequest) and request.join_leave
        assert one({"id": 1, "subscribe": {"channel": "c", "join_leave": 1}}).error == (
            "join_leave must be true or false"
        )

    @pytest.mark.parametrize("method", ["ping", "send"])
    def test_methods_without_a_request_type(self, method: str) -> None:
        command = one({"id": 1, method: {"channel": "x"}})
        assert (command.method, command.request, command.error) == (method, None, "")

    @pytest.mark.parametrize("body", [1, "x", [], True, 1.5])
    def test_non_object_body_is_a_command_error(self, body: Any) -> None:
        command = one({"id": 1, "subscribe": body})
        assert command.error == "subscribe must be an object"
        assert command.request is None

    def test_null_body_is_an_empty_body(self) -> None:
        assert one({"id": 1, "connect": None}).request == ConnectRequest()
        assert one({"id": 1, "subscribe": None}).error == "channel is required"

    def test_unknown_fields_are_ignored(self) -> None:
        command = one(
            {"id": 2, "subscribe": {"channel": "c", "flag": 3, "delta": "fossil", "tf": {}}}
        )
        assert command.request == SubscribeRequest("c")
        assert one({"id": 2, "ping": {}, "extra": 1}).method == "ping"

    def test_connect(self) -> None:
        command = one(
            {
                "id": 1,
                "connect": {
                    "token": "T",
                    "name": "js",
                    "version": "5.8.0",
                    "data": {"x": 1},
                    "subs": {
                        "a": {"recover": True, "offset": 6, "epoch": "ep1"},
                        "b": {"recover": False, "offset": 9},
                        "c": {"offset": 1},
                        "d": {"recover": True},
                    },
                },
            }
        )
        assert command.request == ConnectRequest(
            "T",
            "js",
            "5.8.0",
            {"a": RecoverPosition(6, "ep1"), "d": RecoverPosition(0, "")},
            b'{"x":1}',
        )

    def test_subscribe(self) -> None:
        command = one(
            {
                "id": 2,
                "subscribe": {
                    "channel": "c",
                    "token": "S",
                    "recover": True,
                    "offset": 2**53,
                    "epoch": "e",
                },
            }
        )
        assert command.request == SubscribeRequest("c", "S", True, RecoverPosition(2**53, "e"))

    def test_subscribe_without_recover_drops_the_position(self) -> None:
        command = one({"id": 2, "subscribe": {"channel": "c", "offset": 5, "epoch": "e"}})
        assert command.request == SubscribeRequest("c")

    def test_null_strings_are_empty(self) -> None:
        command = one({"id": 2, "subscribe": {"channel": "c", "token": None, "epoch": None}})
        assert command.request == SubscribeRequest("c")

    def test_other_requests(self) -> None:
        assert one({"id": 1, "unsubscribe": {"channel": "c"}}).request == UnsubscribeRequest("c")
        assert one({"id": 1, "refresh": {"token": "t"}}).request == RefreshRequest("t")
        assert one({"id": 1, "sub_refresh": {"channel": "c", "token": "t"}}).request == (
            SubRefreshRequest("c", "t")
        )

    @pytest.mark.parametrize(
        ("obj", "message"),
        [
            ({"connect": {"token": 1}}, "token must be a string"),
            ({"connect": {"name": []}}, "name must be a string"),
            ({"connect": {"version": {}}}, "version must be a string"),
            ({"connect": {"subs": ["a"]}}, "subs must be an object"),
            ({"connect": {"subs": "x"}}, "subs must be an object"),
            ({"connect": {"subs": {"a": 1}}}, "subs entries must be objects"),
            ({"connect": {"subs": {"a": {"recover": True, "offset": -1}}}}, "offset"),
            ({"connect": {"subs": {"a": {"recover": True, "offset": "1"}}}}, "offset"),
            ({"connect": {"subs": {"a": {"recover": True, "epoch": 1}}}}, "epoch"),
            ({"connect": {"subs": {"a": {"recover": "yes"}}}}, "recover"),
            ({"subscribe": {}}, "channel is required"),
            ({"subscribe": {"channel": ""}}, "channel is required"),
            ({"subscribe": {"channel": 5}}, "channel must be a string"),
            ({"subscribe": {"channel": ["a"]}}, "channel must be a string"),
            ({"subscribe": {"channel": "c", "token": 5}}, "token must be a string"),
            ({"subscribe": {"channel": "c", "recover": 1}}, "recover"),
            ({"subscribe": {"channel": "c", "recover": "true"}}, "recover"),
            ({"subscribe": {"channel": "c", "recover": True, "offset": 1.5}}, "offset"),
            ({"subscribe": {"channel": "c", "recover": True, "offset": True}}, "offset"),
            ({"subscribe": {"channel": "c", "recover": True, "offset": -3}}, "offset"),
            ({"subscribe": {"channel": "c", "recover": True, "epoch": 7}}, "epoch"),
            ({"unsubscribe": {}}, "channel is required"),
            ({"unsubscribe": {"channel": 1}}, "channel must be a string"),
            ({"refresh": {}}, "token is required"),
            ({"refresh": {"token": False}}, "token must be a string"),
            ({"sub_refresh": {"token": "t"}}, "channel is required"),
            ({"sub_refresh": {"channel": "c"}}, "token is required"),
            ({"sub_refresh": {"channel": "c", "token": 1}}, "token must be a string"),
        ],
        ids=repr,
    )
    def test_wrong_field_types_are_command_errors(self, obj: dict[str, Any], message: str) -> None:
        command = one({"id": 9, **obj})
        assert command.id == 9
        assert command.request is None
        assert message in command.error

    def test_first_known_method_wins(self) -> None:
        assert one({"id": 1, "subscribe": {"channel": "c"}, "connect": {}}).method == "connect"


# ---------------------------------------------------------------------------- connect request
class TestConnectRequest:
    def test_bare_connect_request(self) -> None:
        request = decode_connect_request(
            {"token": "T", "subs": {"ch": {"recover": True, "offset": 4, "epoch": "e"}}}
        )
        assert request == ConnectRequest("T", subs={"ch": RecoverPosition(4, "e")})

    def test_empty_request(self) -> None:
        assert decode_connect_request({}) == ConnectRequest()

    @pytest.mark.parametrize(
        "body",
        [
            None,
            [],
            "x",
            1,
            {"token": 1},
            {"subs": 2},
            {"subs": {"a": {"recover": True, "offset": "x"}}},
        ],
        ids=repr,
    )
    def test_invalid(self, body: Any) -> None:
        with pytest.raises(ProtocolError):
            decode_connect_request(body)


# ---------------------------------------------------------------------------- encoding
class TestEncode:
    def test_reply_always_carries_the_result(self) -> None:
        assert codec.encode_reply(3, "unsubscribe", {}) == b'{"id":3,"unsubscribe":{}}'
        assert codec.encode_reply(2, "subscribe", {"recoverable": True}) == (
            b'{"id":2,"subscribe":{"recoverable":true}}'
        )

    def test_error(self) -> None:
        assert codec.encode_error(4, ErrorCode.NOT_AVAILABLE) == (
            b'{"id":4,"error":{"code":108,"message":"not available"}}'
        )
        assert codec.encode_error(5, ErrorCode.LIMIT_EXCEEDED, "too many subscriptions") == (
            b'{"id":5,"error":{"code":106,"message":"too many subscriptions"}}'
        )

    @pytest.mark.parametrize("code", [ErrorCode.INTERNAL, ErrorCode.TOO_MANY_REQUESTS])
    def test_temporary_errors_say_so(self, code: ErrorCode) -> None:
        assert orjson.loads(codec.encode_error(1, code))["error"]["temporary"] is True

    def test_permanent_errors_omit_temporary(self) -> None:
        for code in ErrorCode:
            if not code.temporary:
                assert b"temporary" not in codec.encode_error(1, code)

    def test_raw_fragments_are_embedded_as_json(self) -> None:
        message = codec.encode({"push": {"pub": codec.raw(b'{"data":{"n":1},"offset":3}')}})
        assert message == b'{"push":{"pub":{"data":{"n":1},"offset":3}}}'

    @pytest.mark.parametrize(
        "message",
        [
            {"a": "line\nbreak", "b": "\r\n", "c": "\u2028\u2029"},
            {"nested": {"list": ["x\ny", {"k\nk": "v"}]}},
            {"id": 1, "error": {"code": 107, "message": "bad\nrequest"}},
        ],
    )
    def test_encode_never_emits_newlines(self, message: dict[str, Any]) -> None:
        out = codec.encode(message)
        assert b"\n" not in out and b"\r" not in out
        assert orjson.loads(out) == message
        assert b"\n" not in codec.encode_error(1, ErrorCode.BAD_REQUEST, "a\nb")
        assert b"\n" not in codec.encode_reply(1, "x", message)

    def test_request_type(self) -> None:
        assert codec.request_type("subscribe") is SubscribeRequest
        assert codec.request_type("publish") is PublishRequest
        assert codec.request_type("ping") is None
