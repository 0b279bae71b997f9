"""Helpers of the ledger tests on the real broker: ledgers with two telling merges, and
the stream's first offset read apart from any ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq

from tests.log.live import SCALE, URL
from tidings.config import AmqpSettings, LedgerSettings
from tidings.log.ledger import RabbitMqLedger

SMALL = 64 << 10  # the least ledger.max_bytes: segments of 4 KiB, snapshots every 16 KiB


def sum_merge(held: bytes | None, written: bytes | None) -> bytes | None:
    # Not idempotent: a write applied twice, or lost, shows in the total.
    if written is None:
        return None
    return b"%d" % (int(held or b"0") + int(written))


def append_merge(held: bytes | None, written: bytes | None) -> bytes | None:
    # Not commutative: two orders give two results.
    if written is None:
        return None
    return ((held or b"") + written)[-200:]


def ledger(stream: str, url: str = URL, max_bytes: int = 1 << 20, **kwargs: Any) -> RabbitMqLedger:
    made = RabbitMqLedger(
        AmqpSettings(url=url, reconnect_interval=0.2 * SCALE),
        LedgerSettings(stream=stream, max_bytes=max_bytes),
        timeout=5 * SCALE,
        snapshot_jitter=0.1,
        **kwargs,
    )
    made.merge("sum", sum_merge)
    made.merge("log", append_merge)
    return made


async def first_offset(stream: str) -> int:
    """The first offset the stream still holds, read apart from any ledger."""
    connection = await aiormq.connect(URL)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=1)
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            if not got.done():
                got.set_result(message.header.properties.headers["x-stream-offset"])

        await channel.basic_consume(stream, on_message, arguments={"x-stream-offset": "first"})
        return await asyncio.wait_for(got, 10 * SCALE)
    finally:
        await connection.close()
