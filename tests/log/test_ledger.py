"""The RabbitMQ ledger against the real broker: two ledgers converge, a put is read back,
merges apply in the same order everywhere, a replay is exact after the retention dropped
the stream's head, a cut connection loses and repeats nothing, refusals."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

import pytest

from tests.log.ledgers import SMALL, append_merge, first_offset, ledger, sum_merge
from tests.log.live import Proxy, delete_queue, until
from tidings.ledger import LedgerError
from tidings.log.broker import SourceError
from tidings.log.ledger_wire import MAX_KEY_BYTES, MAX_VALUE_BYTES
from tidings.log.memory import MemoryLedger
from tidings.metrics import Metrics

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_two_ledgers_converge_and_a_put_is_read_back(state_stream: str) -> None:
    a, b = ledger(state_stream), ledger(state_stream)
    await a.start()
    await b.start()
    try:
        assert a.ready and b.ready
        seen: list[tuple[str, str, bytes | None]] = []
        b.on_change(lambda *change: seen.append(change))
        await a.put("push", "alice", b"endpoint")
        assert a.get("push", "alice") == b"endpoint"  # read back before put returned
        await until(lambda: b.get("push", "alice") == b"endpoint", what="b reads a's write")
        await b.put("push", "alice", None)
        assert b.get("push", "alice") is None
        await until(lambda: a.get("push", "alice") is None, what="a reads b's delete")
        assert seen == [("push", "alice", b"endpoint"), ("push", "alice", None)]
        assert a.snapshot() == b.snapshot() == {}
    finally:
        await a.close()
        await b.close()


async def test_merges_apply_in_the_same_order_on_every_ledger(state_stream: str) -> None:
    a, b = ledger(state_stream), ledger(state_stream)
    await a.start()
    await b.start()
    try:
        writes = [
            side.put("log", f"k{i % 3}", b"%s%d," % (name, i))
            for i in range(60)
            for side, name in ((a, b"a"), (b, b"b"))
        ]
        await asyncio.gather(*writes)
        await until(lambda: a.snapshot() == b.snapshot(), what="the same table")
        late = ledger(state_stream)
        await late.start()  # replays the stream in its order: the same again
        try:
            assert late.snapshot() == a.snapshot()
        finally:
            await late.close()
        kept = a.get("log", "k0")
        assert kept is not None and b"a0," in kept and b"b0," in kept
    finally:
        await a.close()
        await b.close()


async def test_a_replay_is_exact_after_snapshots_and_a_dropped_head(
    state_stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tidings.log")
    metrics = Metrics()
    # Snapshots in parts of 100 bytes: several messages each, as a large table would take.
    writer = ledger(state_stream, max_bytes=SMALL, metrics=metrics, part_bytes=100)
    await writer.start()
    truth = MemoryLedger()
    truth.merge("sum", sum_merge)
    truth.merge("log", append_merge)
    try:
        for batch in range(40):
            writes = []
            for i in range(25):
                n = batch * 25 + i
                kind, key = ("sum", f"n{n % 7}") if n % 2 else ("log", f"l{n % 5}")
                value = None if n % 97 == 0 else b"%d" % (n % 10)
                truth.apply(kind, key, value)  # in the order the puts are made, below
                writes.append((kind, key, value))
            for kind, key, value in writes:
                await writer.put(kind, key, value)
        assert writer.snapshot() == truth.snapshot()
        assert count(metrics, "tidings_ledger_snapshots_total") >= 3
        assert count(metrics, "tidings_ledger_writes_total", result="applied") == 1000
        assert await first_offset(state_stream) > 0, "the retention dropped no segment"
        parts = [int(m) for m in re.findall(r"snapshot of \d+ bytes in (\d+) parts", caplog.text)]
        assert parts and min(parts) > 1, caplog.text
        late = ledger(state_stream, max_bytes=SMALL)
        await late.start()
        try:
            assert "seeking a snapshot" in caplog.text and "restored the snapshot" in caplog.text
            assert late.snapshot() == truth.snapshot()
            await late.put("sum", "n1", b"5")
            await until(
                lambda: writer.get("sum", "n1") == late.get("sum", "n1"), what="convergence"
            )
        finally:
            await late.close()
    finally:
        await writer.close()


async def test_a_cut_connection_resumes_with_nothing_lost_or_applied_twice(
    state_stream: str,
) -> None:
    proxy = Proxy()
    await proxy.start()
    cut, direct = ledger(state_stream, url=proxy.url), ledger(state_stream)
    await cut.start()
    await direct.start()
    try:
        for i in range(300):
            if i in (100, 200):
                await until(lambda: cut.ready, what="ready again")
                assert proxy.cut() >= 1
                await until(lambda: not cut.ready, what="not ready while away")
                with pytest.raises(LedgerError, match="not connected"):
                    await cut.put("sum", "cut", b"1")
            await direct.put("sum", "total", b"1")
        await until(lambda: cut.ready, what="ready again")
        await cut.put("sum", "total", b"1")
        await until(lambda: direct.get("sum", "total") == b"301", what="the cut ledger's write")
        assert cut.get("sum", "total") == b"301"
        assert cut.get("sum", "cut") is None
    finally:
        await cut.close()
        await direct.close()
        await proxy.close()


async def test_writes_too_large_are_refused(state_stream: str) -> None:
    metrics = Metrics()
    small = ledger(state_stream, max_bytes=SMALL, metrics=metrics)
    with pytest.raises(LedgerError, match="not started"):
        await small.put("push", "a", b"1")
    await small.start()
    try:
        with pytest.raises(LedgerError, match="key takes at most"):
            await small.put("push", "k" * (MAX_KEY_BYTES + 1), b"1")
        with pytest.raises(LedgerError, match="value takes at most"):
            await small.put("push", "a", b"v" * (MAX_VALUE_BYTES + 1))
        with pytest.raises(LedgerError, match="kind takes at most"):
            await small.put("p" * 65, "a", b"1")
        with pytest.raises(LedgerError, match=r"raise ledger\.max_bytes"):
            for i in range(small.table_limit // 1000 + 1):
                await small.put("push", f"k{i}", b"v" * 1000)
        assert 0 < small.table_bytes <= small.table_limit
        await small.put("push", "k0", None)  # a delete shrinks the table: always taken
        assert count(metrics, "tidings_ledger_writes_total", result="refused") == 5
    finally:
        await small.close()
    with pytest.raises(LedgerError, match="closed"):
        await small.put("push", "a", b"1")


async def test_a_stream_set_up_otherwise_is_refused_at_start(state_stream: str) -> None:
    first = ledger(state_stream, max_bytes=SMALL)
    await first.start()
    await first.close()
    other = ledger(state_stream, max_bytes=SMALL * 2)
    with pytest.raises(SourceError, match=r"ledger\.max_bytes"):
        await other.start()
    assert not other.ready


async def test_no_broker_is_refused_at_start(state_stream: str) -> None:
    absent = ledger(state_stream, url="amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(SourceError, match="cannot reach RabbitMQ"):
        await absent.start()


async def test_workers_starting_at_once_on_a_new_stream_all_start(rabbitmq: None) -> None:
    # Workers of one node declare the ledger's stream together; RabbitMQ refuses a declare
    # that reaches a stream still being created ("does not have a replica on the local
    # node"): a start waits for it rather than failing.
    for _ in range(5):
        name = f"test.{uuid.uuid4().hex[:10]}.state"
        ledgers = [ledger(name) for _ in range(4)]
        try:
            await asyncio.gather(*(each.start() for each in ledgers))
            assert all(each.ready for each in ledgers)
        finally:
            for each in ledgers:
                await each.close()
            await delete_queue(name)
