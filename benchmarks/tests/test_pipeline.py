"""The per-stage pipeline measurement runs the worker's real path."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import pipeline
from tidings.log.stream_protocol import message_from_bytes


def test_every_event_reaches_its_user_and_every_stage_costs_something() -> None:
    result = asyncio.run(pipeline.measure(users=50, events=400, chunk=40, rounds=2))
    assert set(result) == set(pipeline.STAGES)
    assert all(cost > 0 for cost in result.values())
    assert pipeline._Transport.pushes == 400


def test_a_lost_push_is_an_error_not_a_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline._Transport, "write", lambda self, data: None)
    with pytest.raises(RuntimeError, match="0 pushes written for 100 events"):
        asyncio.run(pipeline.measure(users=10, events=100, chunk=10, rounds=1))


def test_the_events_are_what_the_stream_holds() -> None:
    message = message_from_bytes(pipeline.encoded_event(12, 3), 0)
    assert (message.exchange, message.routing_key) == ("bench.tidings", "user.12")
    assert message.headers == {"x-tidings-channel": "user#12"}
    assert b'"seq":3' in message.body and message.timestamp is not None
