"""A cell's status and notes, from what its load generators and publishers reported."""

from __future__ import annotations

from typing import Any

from benchmarks.cell import PUBLISH_GRACE_S, drain_deadline_s, summarise
from benchmarks.profiles import Cell
from benchmarks.stats import Histogram

_CELL = Cell("broadcast", 10, 10, 5)
_WINDOW = (0, 5_000_000_000)


def _result(reason: str, expected: int, delivered: int) -> dict[str, Any]:
    latency = Histogram()
    for _ in range(delivered):
        latency.add(2_000.0)
    return {"reason": reason, "expected": expected, "delivered": delivered,
            "missing": expected - delivered, "received": delivered, "duplicates": 0,
            "wasted": 0, "stale": 0, "dropped": 0, "last_ns": 6_000_000_000,
            "latency": latency.to_json(), "maxrss_kb": 2048}


def _summary(results: list[dict[str, Any]], done: list[dict[str, Any]] | None = None,
             refused: int = 0) -> tuple[dict[str, Any], list[str]]:
    done = done or [{"phase": "done", "published": 50}]
    return summarise(results, done, _CELL, _WINDOW, 3.0, refused, "publishing ended")


def test_everything_delivered_is_ok_and_sums_the_load_generators() -> None:
    summary, notes = _summary([_result("complete", 250, 250), _result("complete", 250, 250)])
    assert (summary["status"], summary["delivered"], summary["missing"]) == ("ok", 500, 0)
    assert summary["published"] == 50 and summary["publish_rate"] == 10.0
    assert summary["delivered_per_s"] == round(500 / 6, 1)  # to the last arrival
    assert summary["latency_p99_ms"] == 2.0
    assert notes == []


def test_refused_connections_make_it_partial() -> None:
    assert _summary([_result("complete", 250, 250)], refused=3)[0]["status"] == "partial"


def test_missing_events_are_lossy_or_behind_with_a_note_why() -> None:
    summary, notes = _summary([_result("stalled", 250, 240)])
    assert summary["status"] == "lossy"
    assert notes == ["10 events never arrived (nothing more for 3 s)"]
    summary, notes = _summary([_result("deadline", 250, 240), _result("complete", 250, 250)])
    assert summary["status"] == "behind"
    assert notes == [f"events still arriving {drain_deadline_s(_CELL):.0f} s after publishing "
                     f"ended (490 of 500 delivered); stopped waiting"]


def test_a_blocked_publisher_puts_the_cell_behind() -> None:
    summary, notes = _summary([_result("complete", 100, 100)],
                              done=[{"phase": "progress", "published": 20}])
    assert summary["status"] == "behind"
    assert notes == [f"publishers still blocked by the broker's flow control "
                     f"{PUBLISH_GRACE_S:.0f} s after their duration; stopped"]
