"""The node's side of recoveries on their own: which positions read the log, and what a
record read again means (the reads themselves: tests/test_recovery.py)."""

from __future__ import annotations

from dataclasses import replace

import orjson

from tests.fakes import settings
from tidings import commands
from tidings.config import ApiSettings, ChannelOptions
from tidings.history import History
from tidings.log.memory import MemoryLog
from tidings.metrics import Metrics
from tidings.protocol.messages import RecoverPosition
from tidings.record import Record
from tidings.recoveries import Recoveries
from tidings.recovery import Removal
from tidings.router import CHANNEL_HEADER, Routed, Router, parse_routes

KEY = "api-key-0123456789abcdef"


def recoveries(event_log: MemoryLog, head: int = 100, floor: int = 50) -> Recoveries:
    config = replace(settings(), api=ApiSettings(key=KEY))
    history = History()
    history.floor = floor

    def options(channel: str) -> ChannelOptions | None:
        return config.namespace(channel.rpartition(":")[0])

    def limits(channel: str) -> tuple[int, float]:
        found = options(channel)
        return (0, 0.0) if found is None else (found.history_size, found.history_ttl)

    return Recoveries(
        config,
        event_log,
        Router(parse_routes(config.routes), config.amqp.max_message_bytes),
        history,
        options,
        limits,
        head=lambda: head,
        metrics=Metrics(),
        clock=lambda: 1000.0,
        monotonic=lambda: 0.0,
    )


def test_a_position_older_than_the_window_reads_the_log() -> None:
    event_log = MemoryLog()
    made = recoveries(event_log)
    assert made.wanted("news", RecoverPosition(10, event_log.epoch))
    assert made.wanted("news", RecoverPosition(10, ""))  # no epoch: the current one
    assert not made.wanted("news", RecoverPosition(50, event_log.epoch))  # the window's
    assert not made.wanted("news", RecoverPosition(10, "another"))
    assert not made.wanted("nohistory:x", RecoverPosition(10, event_log.epoch))
    assert not made.wanted("nosuch:x", RecoverPosition(10, event_log.epoch))
    assert made.covers("news", 50) and not made.covers("news", 49)


async def test_a_log_that_cannot_scan_reads_nothing() -> None:
    event_log = MemoryLog()
    made = recoveries(event_log)
    await event_log.close()
    assert not made.wanted("news", RecoverPosition(10, event_log.epoch))


def test_a_record_read_again_is_routed_and_a_history_remove_is_a_removal() -> None:
    made = recoveries(MemoryLog())
    event = Record(1, "app.event", orjson.dumps({"n": 1}), 0.0, {CHANNEL_HEADER: "news"})
    routed = made.route(event)
    assert isinstance(routed, Routed) and routed.channels == ("news",)
    remove = commands.ServerCommand("history_remove", 1.0, channel="news")
    body, headers = commands.encode(remove, KEY)
    assert made.route(Record(2, "app.event", body, 0.0, headers)) == Removal("news")
    disconnect = commands.ServerCommand("disconnect", 1.0, user="alice")
    body, headers = commands.encode(disconnect, KEY)
    assert made.route(Record(3, "app.event", body, 0.0, headers)) is None
    assert made.route(Record(4, "app.event", body, 0.0, {commands.COMMAND_HEADER: "0"})) is None
