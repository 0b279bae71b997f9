"""The overload workload's pure parts: who is slow, recovery sessions, tallies, metrics."""

from __future__ import annotations

from typing import Any

import orjson

from benchmarks.adapters import TidingsSession
from benchmarks.cell import merge_slow
from benchmarks.monitor import prometheus_value
from benchmarks.profiles import PROFILES, Cell, is_slow


def test_slow_connections_are_spread_evenly() -> None:
    slow = [u for u in range(200) if is_slow(u, 200, 50)]
    assert len(slow) == 50
    assert slow[:3] == [3, 7, 11]
    # Each half of the users (one load generator each) holds half of them.
    assert sum(1 for u in slow if u < 100) == 25
    assert not any(is_slow(u, 10, 0) for u in range(10))
    assert all(is_slow(u, 10, 10) for u in range(10))


def test_overload_cell_names_and_traffic() -> None:
    cell = Cell("overload", 200, 100, 15, workers=1, slow=50)
    assert cell.name == "overload-n200-r100-s50"
    assert cell.traffic == "broadcast"
    assert cell.offered == 20_000
    for profile in ("targets", "full"):
        assert cell in PROFILES[profile]


def test_tidings_session_tracks_its_position_and_recovers() -> None:
    session = TidingsSession(None, "t")
    events: list[dict[str, Any]] = []
    session.feed(b'{"id":1,"connect":{}}\n'
                 b'{"id":2,"subscribe":{"recoverable":true,"epoch":"e1","offset":10}}',
                 events, [])
    assert (session.offset, session.epoch, session.recovered) == (10, "e1", None)
    session.feed(b'{"push":{"channel":"bench","pub":{"data":{"seq":0},"offset":12}}}',
                 events, [])
    assert session.offset == 12

    again = TidingsSession(None, "t", recover_from=(session.offset, session.epoch))
    subscribe = orjson.loads(again.opening()[0].split(b"\n")[1])
    assert subscribe["subscribe"] == {"channel": "bench", "recover": True, "offset": 12,
                                      "epoch": "e1"}
    replayed: list[dict[str, Any]] = []
    again.feed(b'{"id":2,"subscribe":{"recoverable":true,"epoch":"e1","offset":15,'
               b'"was_recovering":true,"recovered":true,"publications":['
               b'{"data":{"seq":1},"offset":13},{"data":{"seq":2},"offset":14}]}}',
               replayed, [])
    assert again.ready and again.recovered and again.replayed == 2
    assert replayed == [{"seq": 1}, {"seq": 2}]
    assert again.offset == 14

    refused = TidingsSession(None, "t", recover_from=(1, "old"))
    refused.feed(b'{"id":2,"subscribe":{"epoch":"e1","offset":15,"was_recovering":true}}',
                 [], [])
    assert refused.ready and refused.recovered is False and refused.offset == 15


def test_prometheus_value_sums_matching_samples() -> None:
    text = ('# HELP tidings_disconnects_total Connections closed\n'
            '# TYPE tidings_disconnects_total counter\n'
            'tidings_disconnects_total{code="3008"} 48.0\n'
            'tidings_disconnects_total{code="3012"} 2.0\n'
            'tidings_disconnects_created{code="3008"} 1.7e9\n'
            'tidings_recoveries_total{outcome="recovered"} 47.0\n')
    assert prometheus_value(text, "tidings_disconnects_total", {"code": "3008"}) == 48
    assert prometheus_value(text, "tidings_disconnects_total") == 50
    assert prometheus_value(text, "tidings_recoveries_total", {"outcome": "failed"}) == 0


def test_merge_slow_sums_the_load_generators() -> None:
    a = {"slow": 25, "slow_cut": 25, "slow_recovered_ok": 24, "slow_recover_failed": 1,
         "slow_close_codes": {"unread": 20, "3008": 5}, "slow_cut_first_s": 6.2,
         "slow_cut_last_s": 7.0, "slow_errors": {"x": 1}}
    b = {"slow": 25, "slow_cut": 20, "slow_recovered_ok": 20,
         "slow_close_codes": {"unread": 20}, "slow_cut_first_s": 5.9, "slow_cut_last_s": 8.1}
    merged = merge_slow([a, b])
    assert merged["slow"] == 50 and merged["slow_cut"] == 45
    assert merged["slow_recovered_ok"] == 44 and merged["slow_recover_failed"] == 1
    assert merged["slow_close_codes"] == {"unread": 40, "3008": 5}
    assert (merged["slow_cut_first_s"], merged["slow_cut_last_s"]) == (5.9, 8.1)
    assert merged["slow_errors"] == {"x": 1}
