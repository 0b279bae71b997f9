"""Quarantine copies on a real RabbitMQ."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from tests.log.live import URL, Collector, Names, make_log, until
from tidings.record import Record

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


async def test_quarantine_copies_land_in_the_quarantine_exchange(names: Names) -> None:
    log = make_log(names.settings(quarantine_exchange=names.quarantine))
    await log.start(Collector(), warm_seconds=0)
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        inbox = await channel.declare_queue(exclusive=True)
        await inbox.bind(names.quarantine)
        record = Record(17, "invoice.paid", b"not json", 1_700_000_000.0, {"account_id": 42})
        log.quarantine(record, "not_json", "body is not JSON")
        message = None
        for _ in range(200):
            message = await inbox.get(fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.02)
        assert message is not None
        assert message.body == b"not json"
        assert message.routing_key == "invoice.paid"
        assert message.headers["account_id"] == 42
        assert message.headers["x-tidings-reject-kind"] == "not_json"
        assert message.headers["x-tidings-reject-reason"] == "body is not JSON"
        assert message.headers["x-tidings-position"] == 17
        assert message.headers["x-tidings-epoch"] == log.epoch
        assert log.quarantine_failed == 0
    finally:
        await connection.close()
        await log.close()


async def test_binary_and_unsendable_headers_never_stop_the_quarantine(names: Names) -> None:
    # Headers that were not UTF-8 are read as bytes: sent back as byte arrays. A value no
    # AMQP 0-9-1 table can hold is counted as a failed copy, and the next one still goes.
    log = make_log(names.settings(quarantine_exchange=names.quarantine))
    await log.start(Collector(), warm_seconds=0)
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        inbox = await channel.declare_queue(exclusive=True)
        await inbox.bind(names.quarantine)
        binary = {"x-tidings-channel": b"user#\xff", "nested": {"b": [b"\x00\xfe"]}}
        log.quarantine(Record(5, "k", b"{}", time.time(), binary), "bad_channel", "not UTF-8")
        log.quarantine(Record(6, "k", b"{}", time.time(), {"odd": object()}), "not_json", "x")
        log.quarantine(Record(7, "k", b"{}", time.time(), {}), "not_json", "y")
        got = []
        for _ in range(300):
            message = await inbox.get(fail=False)
            if message is not None:
                got.append(message)
                if len(got) == 2:
                    break
            await asyncio.sleep(0.02)
        assert [m.headers["x-tidings-position"] for m in got] == [5, 7]
        assert got[0].headers["x-tidings-channel"] == b"user#\xff"
        assert got[0].headers["nested"] == {"b": [b"\x00\xfe"]}
        await until(lambda: log.quarantine_failed == 1, what="the unsendable copy counted")
    finally:
        await connection.close()
        await log.close()


async def test_a_quarantine_copy_nobody_receives_is_logged(
    names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_log(names.settings(quarantine_exchange=names.quarantine))
    await log.start(Collector(), warm_seconds=0)
    try:
        log.quarantine(Record(3, "k", b"x", time.time()), "too_large", "over 64 KiB")
        await until(lambda: log.quarantine_failed == 1, what="the failure counted")
        assert any("no queue bound" in r.getMessage() for r in caplog.records)
    finally:
        await log.close()
