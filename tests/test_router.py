"""Routing rules: templates, data, rejections, and random records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.errors import ConfigError
from tidings.record import Record
from tidings.router import (
    CHANNEL_HEADER,
    INFO_HEADER,
    Rejected,
    Routed,
    Router,
    Rule,
    parse_routes,
)

INVOICE = {
    "match": "invoice.*",
    "headers": {"tenant": "acme"},
    "channels": ["account:{headers.account_id}", "user#{body.user_id}"],
}


def record(
    body: bytes | object = b"{}",
    routing_key: str = "invoice.created",
    headers: Mapping[str, object] | None = None,
    position: int = 1,
) -> Record:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Record(position, routing_key, raw, 1.0, dict(headers or {}))


def route(rules: list[dict[str, Any]], rec: Record, max_bytes: int = 65536) -> Routed | Rejected:
    return Router(parse_routes(rules), max_bytes).route(rec)


def rejected(result: Routed | Rejected) -> str:
    assert isinstance(result, Rejected), result
    return result.kind


# ---------------------------------------------------------------------------- parse
class TestParse:
    def test_rule(self) -> None:
        (rule,) = parse_routes([{**INVOICE, "data": "body.payload"}])
        assert rule == Rule(
            match="invoice.*",
            channels=("account:{headers.account_id}", "user#{body.user_id}"),
            headers=(("tenant", "acme"),),
            data="payload",
            format="json",
        )
        assert rule.needs_json

    def test_single_channel_string(self) -> None:
        assert parse_routes([{"match": "#", "channels": "x"}])[0].channels == ("x",)

    @pytest.mark.parametrize(
        ("value", "text"), [(True, "true"), (False, "false"), (42, "42"), ("s", "s")]
    )
    def test_header_condition_values(self, value: object, text: str) -> None:
        rule = parse_routes([{"match": "#", "channels": ["x"], "headers": {"h": value}}])[0]
        assert rule.headers == (("h", text),)

    @pytest.mark.parametrize(
        ("data", "path"),
        [("", ""), ("body", ""), ("body.a.b", "a.b"), ("a.b", "a.b"), ("bodyguard", "bodyguard")],
    )
    def test_data_path(self, data: str, path: str) -> None:
        assert parse_routes([{"match": "#", "channels": ["x"], "data": data}])[0].data == path

    @pytest.mark.parametrize(
        ("entry", "key"),
        [
            ({"channels": ["x"]}, "routes[0].match"),
            ({"match": "", "channels": ["x"]}, "routes[0].match"),
            ({"match": 5, "channels": ["x"]}, "routes[0].match"),
            ({"match": "#"}, "routes[0].channels"),
            ({"match": "#", "channels": []}, "routes[0].channels"),
            ({"match": "#", "channels": [""]}, "routes[0].channels"),
            ({"match": "#", "channels": [1]}, "routes[0].channels"),
            ({"match": "#", "channels": ["{nope}"]}, "routes[0].channels"),
            ({"match": "#", "channels": ["{rk.x}"]}, "routes[0].channels"),
            ({"match": "#", "channels": ["{headers.}"]}, "routes[0].channels"),
            ({"match": "#", "channels": ["{body.x}"], "format": "text"}, "routes[0].channels"),
            ({"match": "#", "channels": ["x"], "format": "xml"}, "routes[0].format"),
            ({"match": "#", "channels": ["x"], "headers": ["a"]}, "routes[0].headers"),
            ({"match": "#", "channels": ["x"], "headers": {"a": 1.5}}, "routes[0].headers"),
            ({"match": "#", "channels": ["x"], "data": 1}, "routes[0].data"),
            ({"match": "#", "channels": ["x"], "data": "a", "format": "text"}, "routes[0].data"),
            ({"match": "#", "channels": ["x"], "extra": 1}, "routes[0].extra"),
        ],
    )
    def test_errors_name_the_key(self, entry: dict[str, Any], key: str) -> None:
        with pytest.raises(ConfigError) as info:
            parse_routes([{"match": "ok", "channels": ["ok"]}, entry][1:])
        assert info.value.key == key

    def test_error_index(self) -> None:
        with pytest.raises(ConfigError) as info:
            parse_routes([{"match": "a", "channels": ["x"]}, {"channels": ["x"]}])
        assert info.value.key == "routes[1].match"


# ---------------------------------------------------------------------------- routing
class TestRoute:
    def test_no_rules_routing_key_is_the_channel(self) -> None:
        assert route([], record({"a": 1}, "news")) == Routed(("news",), b'{"a":1}')

    def test_no_rules_and_no_routing_key(self) -> None:
        assert rejected(route([], record({}, ""))) == "unrouted"

    def test_header_channel(self) -> None:
        rec = record({"a": 1}, "x", {CHANNEL_HEADER: " news , user#alice,,news "})
        assert route([INVOICE], rec) == Routed(("news", "user#alice"), b'{"a":1}')

    def test_header_channel_as_bytes(self) -> None:
        rec = record({"a": 1}, "x", {CHANNEL_HEADER: b"news"})
        assert route([], rec) == Routed(("news",), b'{"a":1}')

    def test_header_channel_wins_over_rules(self) -> None:
        rec = record({"user_id": 1}, "invoice.paid", {CHANNEL_HEADER: "only", "tenant": "acme"})
        assert route([INVOICE], rec) == Routed(("only",), b'{"user_id":1}')

    def test_empty_header_channel_is_unrouted(self) -> None:
        assert rejected(route([], record({}, "news", {CHANNEL_HEADER: " , "}))) == "unrouted"

    def test_header_channel_needs_json(self) -> None:
        assert rejected(route([], record(b"plain", "x", {CHANNEL_HEADER: "news"}))) == "not_json"

    def test_rule_with_templates(self) -> None:
        rec = record(
            {"user_id": 42, "amount": 10},
            "invoice.paid",
            {"tenant": "acme", "account_id": 7},
        )
        assert route([INVOICE], rec) == Routed(
            ("account:7", "user#42"), b'{"user_id":42,"amount":10}'
        )

    def test_header_condition_must_match(self) -> None:
        rec = record({"user_id": 1}, "invoice.paid", {"tenant": "other", "account_id": 7})
        assert rejected(route([INVOICE], rec)) == "unrouted"
        rec = record({"user_id": 1}, "invoice.paid", {"account_id": 7})
        assert rejected(route([INVOICE], rec)) == "unrouted"

    def test_header_condition_types(self) -> None:
        rules = [{"match": "#", "channels": ["x"], "headers": {"n": 5, "b": True}}]
        assert isinstance(route(rules, record({}, "k", {"n": 5, "b": True})), Routed)
        assert isinstance(route(rules, record({}, "k", {"n": "5", "b": "true"})), Routed)
        assert isinstance(route(rules, record({}, "k", {"n": b"5", "b": b"true"})), Routed)
        assert rejected(route(rules, record({}, "k", {"n": 6, "b": True}))) == "unrouted"

    def test_routing_key_placeholders(self) -> None:
        rules = [{"match": "#", "channels": ["{rk.0}:{rk.2}", "all:{routing_key}"]}]
        assert route(rules, record({}, "orders.eu.77")).channels == (  # type: ignore[union-attr]
            "orders:77",
            "all:orders.eu.77",
        )

    def test_nested_body_placeholders(self) -> None:
        rules = [
            {"match": "#", "channels": ["u#{body.user.id}", "t:{body.tags.1}", "f:{body.flag}"]}
        ]
        body = {"user": {"id": "bob"}, "tags": ["a", "b"], "flag": False}
        assert route(rules, record(body)).channels == ("u#bob", "t:b", "f:false")  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        ("channels", "body", "headers", "rk"),
        [
            (["{rk.3}"], {}, {}, "a.b"),
            (["{headers.account_id}"], {}, {}, "a"),
            (["{body.user_id}"], {"other": 1}, {}, "a"),
            (["{body.user_id}"], {"user_id": None}, {}, "a"),
            (["{body.user.id}"], {"user": "flat"}, {}, "a"),
            (["{body.list.5}"], {"list": [1]}, {}, "a"),
            (["{body.obj}"], {"obj": {"a": 1}}, {}, "a"),
            (["{body.arr}"], {"arr": [1]}, {}, "a"),
            (["{body.x}"], [1, 2], {}, "a"),
        ],
    )
    def test_missing_field(
        self, channels: list[str], body: object, headers: dict[str, object], rk: str
    ) -> None:
        rules = [{"match": "#", "channels": channels}]
        assert rejected(route(rules, record(body, rk, headers))) == "missing_field"

    def test_not_json(self) -> None:
        assert rejected(route([INVOICE], record(b"{bad", "invoice.x", {"tenant": "acme"}))) == (
            "not_json"
        )
        assert rejected(route([{"match": "#", "channels": ["x"]}], record(b"\xff"))) == "not_json"
        assert rejected(route([], record(b"", "news"))) == "not_json"

    def test_too_large(self) -> None:
        assert rejected(route([], record(b'"' + b"x" * 100 + b'"', "news"), 100)) == "too_large"
        assert isinstance(route([], record(b'"' + b"x" * 98 + b'"', "news"), 100), Routed)

    def test_unrouted(self) -> None:
        assert rejected(route([INVOICE], record({}, "payment.done"))) == "unrouted"

    def test_text_format(self) -> None:
        rules = [{"match": "log.#", "channels": ["logs"], "format": "text"}]
        assert route(rules, record(b"line 1\nline \xff2", "log.app")) == Routed(
            ("logs",), b'"line 1\\nline \xef\xbf\xbd2"'
        )

    def test_data_path(self) -> None:
        rules = [{"match": "#", "channels": ["x"], "data": "body.payload"}]
        assert route(rules, record({"payload": {"n": 1}, "secret": 2})) == Routed(
            ("x",), b'{"n":1}'
        )
        assert rejected(route(rules, record({"other": 1}))) == "missing_field"

    def test_data_is_recompacted(self) -> None:
        result = route([], record(b'{\n  "a" :  [1,\n 2]\n}', "news"))
        assert result == Routed(("news",), b'{"a":[1,2]}')
        carriage = route([], record(b'{"a":\r1}', "news"))
        assert carriage == Routed(("news",), b'{"a":1}')

    def test_json_on_one_line_is_passed_on_as_it_came(self) -> None:
        body = b'  {"a" : [1, 2], "s": "x\\ny"} '  # an escaped newline is not a line break
        assert route([], record(body, "news")) == Routed(("news",), body)

    @pytest.mark.parametrize(
        "channel",
        ["has space", "x" * 256, "é" * 128, "new\nline", "nul\x00", "del\x7f", "\ud800", "u#,"],
        ids=repr,
    )
    def test_invalid_channel(self, channel: str) -> None:
        assert rejected(route([], record({}, "k", {CHANNEL_HEADER: channel}))) == "bad_channel"

    def test_header_channel_bytes_that_are_not_utf8(self) -> None:
        # Decoded with replacement characters, they would name some other, valid channel.
        result = route([], record({}, "k", {CHANNEL_HEADER: b"user#\xff"}))
        assert result == Rejected("bad_channel", "x-tidings-channel header is not UTF-8 text")

    def test_template_header_bytes_that_are_not_utf8(self) -> None:
        rules = [{"match": "#", "channels": ["user#{headers.uid}"]}]
        assert rejected(route(rules, record({}, "k", {"uid": b"\xc3("}))) == "bad_channel"
        assert route(rules, record({}, "k", {"uid": "é".encode()})).channels == ("user#é",)

    @pytest.mark.parametrize("value", ["a\x00", "tab\there", "x" * 251])
    def test_template_results_are_checked_like_any_name(self, value: str) -> None:
        rules = [{"match": "#", "channels": ["user#{body.user_id}"]}]
        assert rejected(route(rules, record({"user_id": value}))) == "bad_channel"

    def test_a_lone_surrogate_in_the_body_is_not_json(self) -> None:
        # The JSON decoder refuses it, so it never reaches a template as a name.
        rules = [{"match": "#", "channels": ["user#{body.user_id}"]}]
        assert rejected(route(rules, record(b'{"user_id": "\\ud800"}'))) == "not_json"

    def test_a_routing_key_ending_in_a_newline_is_no_channel(self) -> None:
        assert rejected(route([], record({}, "news\n"))) == "bad_channel"

    @pytest.mark.parametrize("value", ["a,b", "alice#x", "a b"])
    def test_placeholder_values_cannot_widen_a_channel(self, value: str) -> None:
        # A field value must fill one name: "alice,mallory" must not let mallory in.
        rules = [{"match": "#", "channels": ["user#{body.user_id}"]}]
        assert rejected(route(rules, record({"user_id": value}))) == "bad_channel"

    def test_several_rules_merge_channels_and_dedupe(self) -> None:
        rules = [
            {"match": "invoice.*", "channels": ["a", "b"]},
            {"match": "#", "channels": ["b", "c"]},
            {"match": "other", "channels": ["d"]},
        ]
        assert route(rules, record({"n": 1})) == Routed(("a", "b", "c"), b'{"n":1}')

    def test_first_matching_rule_decides_the_data(self) -> None:
        rules = [
            {"match": "invoice.*", "channels": ["whole"]},
            {"match": "#", "channels": ["part"], "data": "meta"},
            {"match": "#", "channels": ["text"], "format": "text"},
        ]
        body = {"meta": {"m": 1}, "n": 2}
        assert route(rules, record(body)) == Routed(
            ("whole", "part", "text"), b'{"meta":{"m":1},"n":2}'
        )

    def test_text_rule_first_sends_text(self) -> None:
        rules = [
            {"match": "#", "channels": ["t"], "format": "text"},
            {"match": "#", "channels": ["j"]},
        ]
        assert route(rules, record(b'{"a":1}')) == Routed(("t", "j"), b'"{\\"a\\":1}"')

    def test_text_rule_does_not_need_json(self) -> None:
        rules = [
            {"match": "#", "channels": ["t"], "format": "text"},
            {"match": "never", "channels": ["j"]},
        ]
        assert route(rules, record(b"not json")) == Routed(("t",), b'"not json"')

    def test_json_data_is_never_multiline(self) -> None:
        result = route([], record({"s": "a\nb\r\u2028"}, "news"))
        assert isinstance(result, Routed) and b"\n" not in result.data


# ---------------------------------------------------------------------------- property-based
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_bodies = st.one_of(
    _json.map(orjson.dumps),
    st.binary(max_size=200),
    st.builds(lambda d: orjson.dumps(d)[: len(orjson.dumps(d)) // 2], _json),
)
_words = st.sampled_from(["invoice", "created", "paid", "log", "a", "", "*", "#", "x.y"])
_keys = st.lists(_words, max_size=5).map(".".join) | st.text(max_size=20)
_header_values = st.one_of(
    st.text(max_size=12),
    st.binary(max_size=12),
    st.integers(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
)
_headers = st.dictionaries(
    st.sampled_from([CHANNEL_HEADER, "tenant", "account_id", "h"]) | st.text(max_size=5),
    _header_values,
    max_size=4,
)
_RULE_SETS = [
    [],
    [INVOICE],
    [
        {"match": "#", "channels": ["{rk.0}:{rk.1}", "u#{body.user_id}"], "data": "payload"},
        {"match": "log.#", "channels": ["logs"], "format": "text"},
        {"match": "*.paid", "channels": ["paid:{headers.h}"], "headers": {"tenant": "acme"}},
    ],
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=st.sampled_from(range(len(_RULE_SETS))),
    body=_bodies,
    routing_key=_keys,
    headers=_headers,
    max_bytes=st.sampled_from([16, 65536]),
)
def test_route_never_raises(
    rules: int, body: bytes, routing_key: str, headers: dict[str, object], max_bytes: int
) -> None:
    router = Router(parse_routes(_RULE_SETS[rules]), max_bytes)
    result = router.route(Record(1, routing_key, body, 0.0, headers))
    if isinstance(result, Routed):
        assert result.channels and len(set(result.channels)) == len(result.channels)
        assert all(
            c and len(c) <= 255 and not any(ch.isspace() for ch in c) for c in result.channels
        )
        assert b"\n" not in result.data
        orjson.loads(result.data)
    else:
        assert result.kind in {"too_large", "not_json", "missing_field", "bad_channel", "unrouted"}


class TestPublisherInfo:
    def test_info_header_becomes_the_publications_info(self) -> None:
        info = '{"user":"bob","client":"c1","conn_info":{"name": "Bob"}}'
        rec = record({"t": 1}, headers={CHANNEL_HEADER: "room:1", INFO_HEADER: info})
        routed = route([], rec)
        assert isinstance(routed, Routed)
        assert routed.info == b'{"user":"bob","client":"c1","conn_info":{"name":"Bob"}}'

    @pytest.mark.parametrize("info", ["not json", "[]", '{"user":"bob"}', '{"client":7}'])
    def test_malformed_info_is_dropped_not_the_event(self, info: str) -> None:
        rec = record({"t": 1}, headers={CHANNEL_HEADER: "room:1", INFO_HEADER: info})
        routed = route([], rec)
        assert isinstance(routed, Routed) and routed.channels == ("room:1",)
        assert routed.info is None

    def test_no_header_no_info(self) -> None:
        routed = route([], record({"t": 1}, headers={CHANNEL_HEADER: "room:1"}))
        assert isinstance(routed, Routed) and routed.info is None
