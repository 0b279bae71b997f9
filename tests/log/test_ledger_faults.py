"""The RabbitMQ ledger under faults: away while the retention drops what it had not read
yet (it seeks a snapshot and is exact again), links cut while it writes (every write
applied once or not at all, the same everywhere), and the broker refusing it for a while."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.log.ledgers import SMALL, first_offset, ledger
from tests.log.live import delete_queue, until
from tests.system.harness import CutProxy
from tidings.ledger import LedgerError

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


async def test_records_dropped_while_away_are_rebuilt_from_a_snapshot(
    state_stream: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "tidings.log")
    proxy = CutProxy()
    await proxy.start()
    away = ledger(state_stream, url=proxy.url, max_bytes=SMALL)
    writer = ledger(state_stream, max_bytes=SMALL)
    await away.start()
    await writer.start()
    try:
        await writer.put("sum", "total", b"1")
        await until(lambda: away.get("sum", "total") == b"1", what="the first write")
        proxy.refusing = True
        proxy.cut()
        await until(lambda: not away.ready, what="not ready while refused")
        resume = away.position
        n = 1
        while await first_offset(state_stream) <= resume:
            for _ in range(100):
                n += 1
                await writer.put("sum", "total", b"1")
                await writer.put("log", f"k{n % 9}", b"%d," % n)
            assert n < 20_000, "the retention never dropped what the away ledger had not read"
        proxy.refusing = False
        await until(lambda: away.ready, timeout=20, what="ready again")
        await until(lambda: away.snapshot() == writer.snapshot(), what="the same table")
        assert away.get("sum", "total") == b"%d" % n
        assert "dropped records not read yet" in caplog.text
    finally:
        await away.close()
        await writer.close()
        await proxy.stop()


async def test_writes_cut_in_flight_are_applied_once_or_not_at_all(
    state_stream: str,
) -> None:
    proxy = CutProxy()
    await proxy.start()
    cut, direct = ledger(state_stream, url=proxy.url), ledger(state_stream)
    await cut.start()
    await direct.start()
    applied = not_sent = uncertain = 0

    async def write() -> None:
        nonlocal applied, not_sent, uncertain
        for _ in range(400):
            try:
                await cut.put("sum", "total", b"1")
                applied += 1
            except LedgerError as exc:
                if "not connected" in str(exc):
                    not_sent += 1
                else:
                    uncertain += 1
                await asyncio.sleep(0.01)  # as a caller would, before trying again

    try:
        writing = asyncio.create_task(write())
        for _ in range(3):
            await until(lambda: applied > 0 and cut.ready, what="writing")
            await asyncio.sleep(0.05)
            assert proxy.cut() >= 1
            await until(lambda: not cut.ready, what="the cut noticed")
            await until(lambda: cut.ready, what="ready again")
        await writing
        await until(lambda: cut.ready, what="ready at the end")
        await cut.put("sum", "sync", b"1")  # read back by cut: all before it too
        await until(lambda: direct.get("sum", "sync") == b"1", what="direct has read it all")
        total = int(direct.get("sum", "total") or b"0")
        assert cut.get("sum", "total") == direct.get("sum", "total")
        assert applied <= total <= applied + uncertain, (applied, not_sent, uncertain, total)
        assert applied + not_sent + uncertain == 400 and not_sent > 0
    finally:
        await cut.close()
        await direct.close()
        await proxy.stop()


async def test_a_broker_refusing_at_start_then_back_is_waited_for(
    state_stream: str,
) -> None:
    proxy = CutProxy()
    await proxy.start()
    writer = ledger(state_stream)
    await writer.start()
    await writer.put("push", "a", b"1")
    late = ledger(state_stream, url=proxy.url)
    try:
        await late.start()
        assert late.get("push", "a") == b"1"
        proxy.refusing = True
        proxy.cut()
        await until(lambda: not late.ready, what="away")
        with pytest.raises(LedgerError, match="not connected"):
            await late.put("push", "b", b"2")
        await writer.put("push", "c", b"3")  # made while it is away
        await asyncio.sleep(0.5)
        assert not late.ready and late.get("push", "c") is None
        proxy.refusing = False
        await until(lambda: late.get("push", "c") == b"3", timeout=20, what="read after")
        await until(lambda: late.ready, what="caught up again")
        assert late.get("push", "b") is None
    finally:
        await late.close()
        await writer.close()
        await proxy.stop()


async def test_a_stream_deleted_under_it_stops_the_ledger(
    state_stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    running = ledger(state_stream)
    await running.start()
    try:
        await running.put("push", "a", b"1")
        await delete_queue(state_stream)
        await until(lambda: not running.ready, what="not ready")
        with pytest.raises(LedgerError, match="was deleted"):
            await running.put("push", "b", b"2")
        assert running.get("push", "a") == b"1"  # what it held, it still answers
        await asyncio.sleep(0.5)
        assert not running.ready and "deleted under it" in caplog.text
    finally:
        await running.close()


async def test_a_cut_during_the_start_replay_resumes_it(state_stream: str) -> None:
    writer = ledger(state_stream)
    await writer.start()
    for batch in range(0, 20_000, 200):
        await asyncio.gather(*(writer.put("sum", f"n{(batch + i) % 50}", b"1") for i in range(200)))
    proxy = CutProxy()
    await proxy.start()
    late = ledger(state_stream, url=proxy.url)
    starting = asyncio.create_task(late.start())
    try:
        await until(lambda: late.position > 2_000, what="the replay under way")
        assert not starting.done() and proxy.cut() >= 1
        await asyncio.wait_for(starting, 30)
        assert late.ready and late.snapshot() == writer.snapshot()
        assert sum(int(v) for _, v in late.items("sum")) == 20_000
    finally:
        starting.cancel()
        await late.close()
        await writer.close()
        await proxy.stop()
