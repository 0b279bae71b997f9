"""The RabbitMQ ledger's costs on the local broker: a write read back, and a replay.

``python -m benchmarks.ledger`` makes ``--writes`` puts on one :class:`RabbitMqLedger`
(kind ``push``, ``--keys`` keys, values of ``--value-bytes``), one at a time, then the same
number ``--in-flight`` at a time, and prints the latency of a put (publish, confirm, read
back) and the writes per second of each. It then starts a new ledger on the same stream,
which replays what the stream holds (every write from offset 0, or, once the retention
``--max-bytes`` dropped the head, from the first whole snapshot on), and prints how long
its start took. The stream is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import aio_pika

from tidings.config import AmqpSettings, LedgerSettings
from tidings.log.ledger import RabbitMqLedger
from tidings.metrics import Metrics

__all__ = ["main"]


def _ledger(url: str, stream: str, max_bytes: int, metrics: Metrics) -> RabbitMqLedger:
    return RabbitMqLedger(
        AmqpSettings(url=url), LedgerSettings(stream=stream, max_bytes=max_bytes), metrics=metrics
    )


async def _run(args: argparse.Namespace) -> None:
    stream = f"bench.{uuid.uuid4().hex[:10]}.state"
    value = b"v" * args.value_bytes
    metrics = Metrics()
    writer = _ledger(args.url, stream, args.max_bytes, metrics)
    await writer.start()
    try:
        latencies = []
        began = time.perf_counter()
        for i in range(args.writes):
            start = time.perf_counter()
            await writer.put("push", f"key{i % args.keys}", value)
            latencies.append(time.perf_counter() - start)
        sequential = args.writes / (time.perf_counter() - began)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(
            f"one at a time: {sequential:,.0f} writes/s, latency median "
            f"{statistics.median(latencies) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"
        )
        began = time.perf_counter()
        for batch in range(0, args.writes, args.in_flight):
            await asyncio.gather(
                *(
                    writer.put("push", f"key{(batch + i) % args.keys}", value)
                    for i in range(min(args.in_flight, args.writes - batch))
                )
            )
        print(
            f"{args.in_flight} in flight: "
            f"{args.writes / (time.perf_counter() - began):,.0f} writes/s"
        )
        snapshots = metrics.registry.get_sample_value("tidings_ledger_snapshots_total") or 0
        records = writer.position
    finally:
        await writer.close()
    reader = _ledger(args.url, stream, args.max_bytes, Metrics())
    began = time.perf_counter()
    await reader.start()
    took = time.perf_counter() - began
    same = reader.snapshot() == writer.snapshot()
    await reader.close()
    print(
        f"a new ledger's start: {took:.2f} s for a stream written up to offset {records:,} "
        f"with {snapshots:.0f} snapshots, retention {args.max_bytes:,} bytes; "
        f"{reader.table_bytes:,} bytes of table, the same as the writer's: {same}"
    )
    connection = await aio_pika.connect(args.url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(stream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--max-bytes", type=int, default=128 << 20)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
