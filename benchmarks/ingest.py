"""Ingest rate of one consumer process: AMQP 0-9-1 against the RabbitMQ stream protocol.

Run::

    python -m benchmarks.ingest --messages 100000

In one run it

1. declares a fresh stream queue and a topic exchange bound to it (unique names, both deleted
   at the end) and prefills the stream with N small JSON events (~100 bytes, header
   ``x-tidings-channel``, routing key ``bench.ingest``), published by a few pika processes
   with publisher confirms (prefill speed is not what is measured);
2. reads the stream from its first offset to the N-th event, each reader in a fresh process:

   - ``tidings``: :class:`tidings.log.rabbitmq.RabbitMqLog` itself as it runs by default
     (``amqp.reader = "stream"``: the stream protocol through rstream's transport and
     :mod:`tidings.log.amqp10`), started with a warm window covering the prefill; the clock
     runs from ``start()`` to the N-th record handed to ``on_records``;
   - ``tidings-amqp``: the same with ``amqp.reader = "amqp"`` (aio-pika/aiormq,
     ``amqp.prefetch`` as configured), its fallback;
   - ``aiormq``: a bare aiormq consumer (``x-stream-offset: first``, a large prefetch, one
     ``basic.ack(multiple)`` per quarter of it) that builds the same records;
   - ``rbfly`` and ``rstream``: the RabbitMQ stream protocol (``rabbitmq_stream`` plugin,
     port 5552) through those PyPI clients, building the same records: position = stream
     offset + 1, routing key and headers from the AMQP 1.0 message annotations and
     application properties, timestamp from the creation time;
   - ``rstream-raw`` (only when asked for with ``--variants``): rstream without AMQP 1.0
     decoding, the ceiling of its transport;

3. checks that every reader saw the same offset for the same event (each body carries its
   sequence number; positions must be identical on every node, whichever protocol it uses),
   prints a table and appends one JSON line per reader to ``benchmarks/results/ingest.jsonl``.

records/s = N / (time of the N-th record - time the read started, connection included);
steady/s leaves out the wait for the first record. Reader CPU = user + system seconds of the
reader process over the read; records/CPU-s = N / that, the rate one idle core would give,
the figure least moved by other load. Broker CPU = the RabbitMQ node's over the reader
process's whole life (both protocols are served by the same node). The machine has 2 cores:
the reader and the broker compete for them, and so does anything else running (the load
average is printed and recorded); ``--rounds R`` reads R times per reader, interleaved.

Needs RabbitMQ on 127.0.0.1 (AMQP 5672, stream 5552, guest/guest) with the stream plugin
(``rabbitmq-plugins enable rabbitmq_stream``), pika, psutil, and for the stream protocol
``pip install rbfly rstream``; a reader whose library is missing is reported, not fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson

ROUTING_KEY = "bench.ingest"
CHANNEL_HEADER = "x-tidings-channel"
CONTROL_HEADER = "x-tidings-control"
DEFAULT_VARIANTS = ("tidings", "tidings-amqp", "aiormq", "rbfly", "rstream")
ALL_VARIANTS = (*DEFAULT_VARIANTS, "rstream-raw")
RESULTS = Path(__file__).parent / "results" / "ingest.jsonl"
_BATCH = 2000  # prefill events per confirmed batch


@dataclass(frozen=True, slots=True)
class Config:
    """What a reader process needs (passed as JSON on its command line)."""

    amqp_url: str
    stream_host: str
    stream_port: int
    user: str
    password: str
    exchange: str
    stream: str
    messages: int
    prefetch: int
    tidings_prefetch: int
    credit: int
    loop: str
    timeout: float


# -- the events -----------------------------------------------------------------------------


def event_body(run: str, seq: int) -> bytes:
    """A ~100-byte JSON event; ``seq`` identifies it across readers."""
    body = orjson.dumps({"run": run[-8:], "seq": seq, "ts": time.time_ns(), "user": seq % 997})
    pad = max(0, 100 - len(body) - len(',"pad":""'))
    return body[:-1] + b',"pad":"' + b"x" * pad + b'"}'


def seq_of(body: bytes) -> int:
    return int(orjson.loads(body)["seq"])


def _publish_range(url: str, exchange: str, run: str, first: int, count: int) -> int:
    """Publishes events ``first .. first+count-1`` (one pika process), with publisher
    confirms awaited per batch of ``_BATCH``: a stream confirms after its write, so one
    confirm per message would make the prefill latency-bound."""
    import pika
    import pika.spec

    end = first + count
    next_seq, failed = first, ""
    outstanding: set[int] = set()
    tag = 0

    def send_batch(channel: Any) -> None:
        nonlocal tag, next_seq
        stop = min(end, next_seq + _BATCH)
        for seq in range(next_seq, stop):
            props = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                timestamp=int(time.time()),
                headers={CHANNEL_HEADER: f"user#{seq % 997}"},
            )
            channel.basic_publish(exchange, ROUTING_KEY, event_body(run, seq), props, True)
            tag += 1
            outstanding.add(tag)
        next_seq = stop

    def on_confirm(frame: Any) -> None:
        nonlocal failed
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            failed = f"broker nacked delivery tag {method.delivery_tag}"
        done = (
            [t for t in outstanding if t <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        outstanding.difference_update(done)
        if outstanding:
            return
        if next_seq < end and not failed:
            send_batch(channel_ref[0])
        else:
            connection.close()

    def on_return(_channel: Any, method: Any, _props: Any, _body: bytes) -> None:
        nonlocal failed
        failed = f"event returned unroutable ({method.reply_text})"

    channel_ref: list[Any] = []

    def on_channel(channel: Any) -> None:
        channel_ref.append(channel)
        channel.add_on_return_callback(on_return)
        channel.confirm_delivery(on_confirm, callback=lambda _frame: send_batch(channel))

    def on_open_error(_conn: Any, error: Any) -> None:
        nonlocal failed
        failed = f"cannot connect: {error}"
        connection.ioloop.stop()

    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_open_error_callback=on_open_error,
        on_close_callback=lambda _conn, _reason: connection.ioloop.stop(),
    )
    connection.ioloop.start()
    if failed or next_seq < end or outstanding:
        raise RuntimeError(f"prefill {first}..{end - 1}: {failed or 'incomplete'}")
    return count


def prefill(cfg: Config, run: str, publishers: int) -> float:
    """Publishes the N events from ``publishers`` processes; returns the seconds taken."""
    started = time.monotonic()
    share = -(-cfg.messages // publishers)
    ranges = [(first, min(share, cfg.messages - first)) for first in range(0, cfg.messages, share)]
    with ProcessPoolExecutor(len(ranges), mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(_publish_range, cfg.amqp_url, cfg.exchange, run, first, count)
            for first, count in ranges
        ]
        published = sum(f.result() for f in futures)
    assert published == cfg.messages
    return time.monotonic() - started


# -- topology -------------------------------------------------------------------------------


def _stream_arguments(cfg: Config) -> dict[str, Any]:
    # The arguments tidings declares the stream with: its check must find them equal.
    from tidings.config import AmqpSettings
    from tidings.log.amqp import stream_arguments

    return stream_arguments(AmqpSettings(url=cfg.amqp_url))


def declare(cfg: Config) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(cfg.amqp_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(cfg.exchange, exchange_type="topic", durable=True)
        channel.queue_declare(cfg.stream, durable=True, arguments=_stream_arguments(cfg))
        channel.queue_bind(cfg.stream, cfg.exchange, routing_key="#")
    finally:
        connection.close()


def delete(cfg: Config) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(cfg.amqp_url))
    try:
        channel = connection.channel()
        channel.queue_delete(cfg.stream)
        channel.exchange_delete(cfg.exchange)
        for suffix in (".epoch-lock",):  # left by tidings only if it died holding it
            with contextlib.suppress(Exception):
                channel.queue_delete(cfg.stream + suffix)
    finally:
        with contextlib.suppress(Exception):
            connection.close()


# -- readers (each runs in a process of its own) ----------------------------------------------


class Tally:
    """Collects what a reader read; ``done`` is set at the N-th event."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.records: list[Any] = []  # tidings.log.base.Record
        self.count = 0
        self.done = asyncio.Event()
        self.t_first: float | None = None
        self.first_batch = 0
        self.t_done = 0.0
        self.cpu_done = 0.0

    def add(self, records: Sequence[Any]) -> None:
        if self.count >= self.expected or not records:
            return
        if self.t_first is None:
            self.t_first = time.perf_counter()
            self.first_batch = len(records)
        self.records.extend(records)
        self.count += len(records)
        if self.count >= self.expected:
            self.t_done = time.perf_counter()
            self.cpu_done = _cpu()
            self.done.set()


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def read_tidings(cfg: Config, tally: Tally, reader: str = "stream") -> dict[str, Any]:
    import logging

    from tidings.config import AmqpSettings
    from tidings.log.rabbitmq import RabbitMqLog

    logging.basicConfig(level=logging.WARNING)
    settings = AmqpSettings(
        url=cfg.amqp_url,
        exchange=cfg.exchange,
        stream=cfg.stream,
        bindings=["#"],
        prefetch=cfg.tidings_prefetch,
        reader=reader,
        stream_port=cfg.stream_port,
    )

    class Consumer:
        def on_records(self, records: Sequence[Any]) -> None:
            tally.add(records)

        def on_epoch(self, epoch: str) -> None:
            pass

        def on_reject(self, record: Any, kind: str, reason: str) -> None:
            pass

    log = RabbitMqLog(settings, connection_name="tidings-bench-ingest")
    start = asyncio.ensure_future(log.start(Consumer(), warm_seconds=3600))
    try:
        await asyncio.wait(
            (start, asyncio.ensure_future(tally.done.wait())),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if start.done() and start.exception() is not None:
            raise start.exception()  # type: ignore[misc]
        await tally.done.wait()
    finally:
        await log.close()
        with contextlib.suppress(BaseException):
            await start
    return {"prefetch": cfg.tidings_prefetch, "reader": log.reader}


async def read_aiormq(cfg: Config, tally: Tally) -> dict[str, Any]:
    import aiormq
    from aiormq.abc import DeliveredMessage

    from tidings.log.base import Record

    connection = await aiormq.connect(cfg.amqp_url)
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=cfg.prefetch)
    ack_every = max(1, cfg.prefetch // 4)
    unacked = 0
    now = time.time()

    async def on_message(message: DeliveredMessage) -> None:
        nonlocal unacked
        properties = message.header.properties
        headers = dict(properties.headers or {})
        offset = headers.pop("x-stream-offset")
        if CONTROL_HEADER not in headers:
            stamp = properties.timestamp
            tally.add(
                (
                    Record(
                        offset + 1,
                        message.routing_key or "",
                        message.body,
                        stamp.timestamp() if stamp is not None else now,
                        headers,
                    ),
                )
            )
        unacked += 1
        if unacked >= ack_every:
            unacked = 0
            await channel.basic_ack(message.delivery_tag or 0, multiple=True)

    try:
        await channel.basic_consume(cfg.stream, on_message, arguments={"x-stream-offset": "first"})
        await tally.done.wait()
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    return {"prefetch": cfg.prefetch}


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


async def read_rbfly(cfg: Config, tally: Tally) -> dict[str, Any]:
    import rbfly
    import rbfly.streams as rbs

    from tidings.log.base import Record

    client = rbs.streams_client(
        f"rabbitmq-stream://{cfg.user}:{cfg.password}@{cfg.stream_host}:{cfg.stream_port}/"
    )
    get_ctx = rbs.get_message_ctx
    routing_key = rbs.Symbol("x-routing-key")
    batch: list[Record] = []
    sample: dict[str, Any] = {}
    try:
        async for body in client.subscribe(cfg.stream, offset=rbs.Offset.FIRST):
            ctx = get_ctx()
            props = ctx.app_properties
            if CONTROL_HEADER in props:
                continue
            created = ctx.properties.creation_time
            batch.append(
                Record(
                    ctx.stream_offset + 1,
                    ctx.annotations.get(routing_key, ""),
                    body,
                    created.timestamp() if created is not None else ctx.stream_timestamp,
                    props,
                )
            )
            if len(batch) >= 256 or tally.count + len(batch) >= tally.expected:
                tally.add(batch)
                batch = []
                if tally.done.is_set():
                    break
        else:
            raise AssertionError("subscription ended")
        first = tally.records[0]
        sample = {"routing_key": first.routing_key, "headers": dict(first.headers)}
    finally:
        if batch and not tally.done.is_set():
            tally.add(batch)
        await client.disconnect()
    return {"version": getattr(rbfly, "__version__", _dist_version("rbfly")), "sample": sample}


async def read_rstream(cfg: Config, tally: Tally, decode: bool = True) -> dict[str, Any]:
    import rstream

    from tidings.log.base import Record

    consumer = rstream.Consumer(
        cfg.stream_host,
        cfg.stream_port,
        username=cfg.user,
        password=cfg.password,
        connection_name="tidings-bench-ingest",
    )
    batch: list[Any] = []
    pending = 0

    def on_decoded(message: Any, context: Any) -> None:
        nonlocal batch
        props = message.application_properties or {}
        if b"x-tidings-control" in props or CONTROL_HEADER in props:
            return
        annotations = message.message_annotations or {}
        created = (message.properties.creation_time if message.properties else None) or (
            context.timestamp
        )
        batch.append(
            Record(
                context.offset + 1,
                _text(annotations.get(b"x-routing-key", "")),
                message.body[0] if isinstance(message.body, list) else message.body,
                created / 1000,
                {_text(k): _text(v) for k, v in props.items()},
            )
        )
        if len(batch) >= 256 or tally.count + len(batch) >= tally.expected:
            tally.add(batch)
            batch = []

    def on_raw(message: bytes, context: Any) -> None:
        nonlocal pending
        pending += 1
        if pending >= 256 or tally.count + pending >= tally.expected:
            tally.add(range(pending))  # counts only: no offsets checked
            pending = 0

    try:
        await consumer.start()
        await consumer.subscribe(
            cfg.stream,
            on_decoded if decode else on_raw,
            decoder=rstream.amqp_decoder if decode else None,
            offset_specification=rstream.ConsumerOffsetSpecification(rstream.OffsetType.FIRST),
            initial_credit=cfg.credit,
        )
        while not tally.done.is_set():
            await asyncio.wait_for(tally.done.wait(), cfg.timeout)
    finally:
        if batch:
            tally.add(batch)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.close(), 5)
    sample: dict[str, Any] = {}
    if decode and tally.records:
        first = tally.records[0]
        sample = {"routing_key": first.routing_key, "headers": dict(first.headers)}
    return {"version": _dist_version("rstream"), "credit": cfg.credit, "sample": sample}


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


READERS: dict[str, Callable[[Config, Tally], Any]] = {
    "tidings": read_tidings,
    "tidings-amqp": lambda cfg, tally: read_tidings(cfg, tally, reader="amqp"),
    "aiormq": read_aiormq,
    "rbfly": read_rbfly,
    "rstream": read_rstream,
    "rstream-raw": lambda cfg, tally: read_rstream(cfg, tally, decode=False),
}


def offsets_digest(records: Sequence[Any], expected: int) -> dict[str, Any]:
    """Offset of each event by sequence number, hashed: equal digests = same offsets."""
    offsets = [-1] * expected
    for record in records[:expected]:
        offsets[seq_of(record.body)] = record.position - 1
    missing = offsets.count(-1)
    digest = hashlib.sha256(",".join(map(str, offsets)).encode()).hexdigest()[:16]
    return {
        "offsets_sha": digest,
        "missing": missing,
        "min_offset": min(offsets),
        "max_offset": max(offsets),
        "in_order": all(a.position < b.position for a, b in itertools.pairwise(records[:expected])),
    }


def child(variant: str, cfg: Config) -> dict[str, Any]:
    """Runs one reader; the result goes to stdout as one JSON line."""
    if cfg.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def main() -> dict[str, Any]:
        tally = Tally(cfg.messages)
        cpu0, t0 = _cpu(), time.perf_counter()
        async with asyncio.timeout(cfg.timeout):
            extra = await READERS[variant](cfg, tally)
        seconds = tally.t_done - t0
        out: dict[str, Any] = {
            "records": tally.count,
            "seconds": round(seconds, 3),
            "records_per_s": round(tally.expected / seconds),
            "cpu_s": round(tally.cpu_done - cpu0, 3),
            # Load-independent: the rate one core would give this reader alone.
            "records_per_cpu_s": round(tally.expected / max(1e-9, tally.cpu_done - cpu0)),
            "first_record_s": round((tally.t_first or t0) - t0, 3),
            # From the first record on: without connecting and attaching.
            "steady_records_per_s": round(
                (tally.expected - tally.first_batch)
                / max(1e-9, tally.t_done - (tally.t_first or t0))
            ),
            **extra,
        }
        if variant != "rstream-raw":
            out.update(offsets_digest(tally.records, tally.expected))
        return out

    return asyncio.run(main())


# -- the parent -------------------------------------------------------------------------------


def broker_process(port: int = 5672) -> Any:
    """The RabbitMQ node listening on ``port`` (psutil.Process), or None."""
    import psutil

    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    return None


def run_reader(variant: str, cfg: Config, broker: Any) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.ingest", "--child", variant,
           "--config", json.dumps(asdict(cfg))]  # fmt: skip
    beam0 = _proc_cpu(broker)
    load0 = os.getloadavg()[0]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=cfg.timeout + 30, check=False
        )
    except subprocess.TimeoutExpired:
        return {"variant": variant, "error": f"timed out after {cfg.timeout + 30:g}s"}
    beam = _proc_cpu(broker) - beam0
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"variant": variant, "error": f"exit {proc.returncode}: {tail[:300]}"}
    result = json.loads(lines[-1])
    result.update(variant=variant, broker_cpu_s=round(beam, 3), load_1m=round(load0, 2))
    return result


def _proc_cpu(process: Any) -> float:
    if process is None:
        return float("nan")
    t = process.cpu_times()
    return float(t.user + t.system)


def table(results: list[dict[str, Any]], reference: str | None) -> str:
    rows = [("protocol", "reader", "records/s", "steady/s", "reader CPU s", "records/CPU-s",
             "broker CPU s", "offsets identical")]  # fmt: skip
    protocol = {"tidings-amqp": "AMQP 0-9-1", "aiormq": "AMQP 0-9-1"}
    for r in results:
        kind = protocol.get(r["variant"], "stream") + (f" #{r['round']}" if "round" in r else "")
        if "error" in r:
            rows.append((kind, r["variant"], "error", "", "", "", "", r["error"][:60]))
            continue
        if "offsets_sha" not in r:
            same = "n/a (not decoded)"
        elif r["missing"] or not r["in_order"]:
            same = f"no ({r['missing']} missing)"
        elif reference is None:
            same = "unchecked (no AMQP reader)"
        else:
            same = "yes" if r["offsets_sha"] == reference else "no"
        rows.append((kind, r["variant"], f"{r['records_per_s']:,}",
                     f"{r['steady_records_per_s']:,}", f"{r['cpu_s']:.2f}",
                     f"{r['records_per_cpu_s']:,}", f"{r['broker_cpu_s']:.2f}",
                     same))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, of {', '.join(ALL_VARIANTS)}")  # fmt: skip
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--stream-host", default="127.0.0.1")
    parser.add_argument("--stream-port", type=int, default=5552)
    parser.add_argument("--prefetch", type=int, default=5000, help="bare aiormq reader")
    parser.add_argument("--tidings-prefetch", type=int, default=None,
                        help="amqp.prefetch of the tidings reader (default: its own)")  # fmt: skip
    parser.add_argument("--credit", type=int, default=10, help="rstream initial credit (chunks)")
    parser.add_argument("--publishers", type=int, default=4, help="prefill processes")
    parser.add_argument("--rounds", type=int, default=1,
                        help="read the stream this many times per reader, interleaved")  # fmt: skip
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop of the readers (tidings serve uses uvloop)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per reader")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        cfg = Config(**json.loads(args.config))
        print(json.dumps(child(args.child, cfg)), flush=True)
        return 0

    from tidings.config import AmqpSettings

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(ALL_VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    from urllib.parse import urlparse

    url = urlparse(args.amqp_url)
    run = uuid.uuid4().hex[:12]
    cfg = Config(
        amqp_url=args.amqp_url,
        stream_host=args.stream_host,
        stream_port=args.stream_port,
        user=url.username or "guest",
        password=url.password or "guest",
        exchange=f"tidings.bench.ingest.{run}",
        stream=f"tidings.bench.ingest.{run}",
        messages=args.messages,
        prefetch=args.prefetch,
        tidings_prefetch=args.tidings_prefetch or AmqpSettings().prefetch,
        credit=args.credit,
        loop=args.loop,
        timeout=args.timeout,
    )
    broker = broker_process(url.port or 5672)
    print(f"run {run}: stream {cfg.stream}, {cfg.messages:,} events, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores",
          flush=True)  # fmt: skip
    declare(cfg)
    results: list[dict[str, Any]] = []
    try:
        took = prefill(cfg, run, max(1, min(args.publishers, cfg.messages)))
        print(f"prefilled in {took:.1f}s ({cfg.messages / took:,.0f}/s)", flush=True)
        for round_, variant in itertools.product(range(1, max(1, args.rounds) + 1), variants):
            result = run_reader(variant, cfg, broker)
            result["round"] = round_
            results.append(result)
            print(f"  round {round_} {variant}: " + (result.get("error") or
                  f"{result['records_per_s']:,} records/s, CPU {result['cpu_s']:.2f}s"),
                  flush=True)  # fmt: skip
    finally:
        delete(cfg)

    # The AMQP readers' offsets (x-stream-offset) are the reference.
    reference = next(
        (r["offsets_sha"] for r in results if r["variant"] in ("tidings", "aiormq")
         and "offsets_sha" in r and not r["missing"]),
        None,
    )  # fmt: skip
    shas = {r["offsets_sha"] for r in results if "offsets_sha" in r}
    print()
    print(table(results, reference))
    print()
    if reference is None:
        print("offsets: no AMQP 0-9-1 reader completed, nothing to compare against")
    elif len(shas) == 1:
        print(
            "offsets: the stream protocol's offsets equal the AMQP x-stream-offset values "
            "for every event: positions are identical whichever protocol a node uses"
        )
    else:
        print("offsets: DIFFER between readers (see offsets_sha in the results)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with args.out.open("a") as fh:
        for r in results:
            fh.write(json.dumps({"run": run, "at": stamp, "messages": cfg.messages,
                                 "loop": cfg.loop, "offsets_reference": reference,
                                 "offsets_identical": r.get("offsets_sha") == reference,
                                 **r}) + "\n")  # fmt: skip
    print(f"results appended to {args.out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
