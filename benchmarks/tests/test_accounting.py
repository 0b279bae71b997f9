"""Sessions, histogram and the personal draw: what the load generator counts."""

from __future__ import annotations

from typing import Any

import jwt
import orjson
import pytest

from benchmarks.adapters import SessionError, StompSession, TidingsSession
from benchmarks.stats import Histogram
from benchmarks.workload import expected_per_user, user_draws


def test_tidings_session_connects_subscribes_and_answers_pings() -> None:
    token = TidingsSession.make_token(7, "k" * 32)
    assert jwt.decode(token, "k" * 32, algorithms=["HS256"])["sub"] == "7"
    session = TidingsSession(7, token)
    connect, subscribe = session.opening()[0].split(b"\n")
    assert orjson.loads(subscribe) == {"id": 2, "subscribe": {"channel": "user#7"}}
    assert orjson.loads(connect)["connect"]["token"] == token
    events: list[dict[str, Any]] = []
    replies: list[bytes] = []
    session.feed(b'{"id":1,"connect":{"client":"c"}}\n{"id":2,"subscribe":{}}', events, replies)
    assert session.ready
    session.feed(b'{}\n{"push":{"channel":"user#7","pub":{"data":{"seq":1},"offset":3}}}',
                 events, replies)
    assert events == [{"seq": 1}]
    assert replies == [b"{}"]
    with pytest.raises(SessionError):
        session.feed(b'{"id":3,"error":{"code":103,"message":"permission denied"}}', [], [])


def test_tidings_session_reads_every_push_of_a_batch_in_order() -> None:
    session = TidingsSession(None, "t")
    lines = [orjson.dumps({"push": {"channel": "bench", "pub": {"data": {"seq": i, "s": "a\nb"},
                                                                 "offset": 10 + i}}})
             for i in range(5)]
    events: list[dict[str, Any]] = []
    session.feed(b"\n".join(lines), events, [])
    assert [e["seq"] for e in events] == [0, 1, 2, 3, 4]
    assert events[0]["s"] == "a\nb"
    assert session.offset == 14
    # An empty line is no message: read line by line, the same events.
    again: list[dict[str, Any]] = []
    session.feed(lines[0] + b"\n\n" + lines[1], again, [])
    assert [e["seq"] for e in again] == [0, 1]
    with pytest.raises(orjson.JSONDecodeError):
        session.feed(b'{"push":', [], [])


def test_stomp_session_subscribes_after_connected() -> None:
    session = StompSession(None, "ex")
    replies: list[bytes] = []
    session.feed(b"CONNECTED\nversion:1.2\n\n\x00", [], replies)
    assert b"destination:/exchange/ex/bench" in replies[0]
    events: list[dict[str, Any]] = []
    session.feed(b"RECEIPT\nreceipt-id:sub\n\n\x00\nMESSAGE\na:b\n\n{\"seq\":2}\x00", events, [])
    assert session.ready
    assert events == [{"seq": 2}]


def test_histogram_percentiles_and_merge() -> None:
    a, b = Histogram(), Histogram()
    for v in range(1, 1001):
        (a if v % 2 else b).add(v * 1000.0)
    a.merge(Histogram.from_json(orjson.loads(orjson.dumps(b.to_json()))))
    summary = a.summary_ms()
    assert summary["max"] == 1000.0
    assert summary["p50"] == pytest.approx(500, rel=0.03)
    assert summary["p99"] == pytest.approx(990, rel=0.03)


def test_expected_per_user_replays_the_publishers_draw() -> None:
    draws = [user_draws(9, p, 50) for p in range(2)]
    sent = [[next(draws[0]) for _ in range(300)], [next(draws[1]) for _ in range(120)]]
    owed = expected_per_user(9, [300, 120], 50, range(10, 20))
    for user in range(10, 20):
        assert owed[user] == sent[0].count(user) + sent[1].count(user)
