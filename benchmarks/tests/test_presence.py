"""The presence churn measurement runs the node's subscribe path and counts its pushes."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import conn_memory, pipeline, presence
from tidings.config import load_settings


@pytest.mark.parametrize(
    ("subscribers", "per_channel", "pushes"),
    [(1, 1, 1), (3, 1, 3), (4, 2, 2 * (3 + 1)), (5, 2, 2 * (3 + 1) + 1), (3, 3, 6 + 3)],
)
def test_expected_pushes_count_joins_to_members_then_and_leaves_to_those_left(
    subscribers: int, per_channel: int, pushes: int
) -> None:
    assert presence.expected_pushes(subscribers, per_channel) == pushes


@pytest.mark.parametrize("per_channel", [1, 7])
def test_a_churn_with_presence_writes_every_join_and_leave(per_channel: int) -> None:
    churn = presence.measure(True, subscribers=50, per_channel=per_channel, rounds=2)
    assert churn.pushes == presence.expected_pushes(50, per_channel)
    assert churn.subscribe_us > 0 and churn.unsubscribe_us > 0


def test_a_churn_without_presence_writes_nothing() -> None:
    churn = presence.measure(False, subscribers=50, per_channel=7, rounds=1)
    assert churn.pushes == 0
    assert churn.subscribe_us > 0


def test_a_lost_join_push_is_an_error_not_a_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline._Transport, "write", lambda self, data: None)
    with pytest.raises(RuntimeError, match="0 join/leave pushes written, not 16"):
        presence.measure(True, subscribers=4, per_channel=4, rounds=1)


def test_pipeline_with_presence_still_writes_one_push_per_event() -> None:
    result = asyncio.run(pipeline.measure(users=30, events=300, chunk=30, rounds=1,
                                          presence=True))
    assert all(cost > 0 for cost in result.values())
    assert pipeline._Transport.pushes == 300


def test_the_presence_settings_are_valid_and_on() -> None:
    on = pipeline.presence_settings(True).channels
    assert (on.presence, on.join_leave) == (True, True)
    assert not pipeline.presence_settings(False).channels.presence
    loaded = load_settings(None, {}, {"auth.hmac_secret": "x" * 32, **conn_memory.PRESENCE})
    assert loaded.channels.force_push_join_leave and loaded.channels.presence


def test_conn_memory_presence_is_in_process_only() -> None:
    with pytest.raises(SystemExit):
        conn_memory.main(["--rss", "--presence"])
