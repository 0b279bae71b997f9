"""Recovery from the stream: what a read of the log costs one client and 10,000 at once,
and what it does to live delivery meanwhile.

``python -m benchmarks.recovery`` fills a throw-away stream with ``--events`` personal
events of ``--users`` users (the bench's own publisher processes, :mod:`benchmarks.publisher`),
starts a node in this process on it (attached at the stream's end, so every position in it
is older than the node's history windows), and then, with the node's own
:meth:`~tidings.node.Node.recover_from_log`:

1. recovers one client ``--behind`` records behind the head: wall time and this process's
   CPU time (nothing else runs);
2. starts a live publisher (``--live-rate`` events/s to ``--live`` subscribers of this
   node, each event stamped when published) and measures its delivery latency (publish ->
   the hub's ``deliver``) for ``--quiet`` seconds;
3. recovers ``--clients`` clients at once, each up to ``--behind`` records behind, and
   measures the same latency while they run, the passes and records they read, and their
   wall and CPU time.

Each recovered client is then subscribed in the step its read ends in, with the window's
recovery from where the read stopped, and its subscribe result is built and encoded, as a
session does. A probe meanwhile measures how late the event loop wakes a 1 ms sleep: the
longest turn of the loop, quiet and during the recoveries.

It prints one JSON object of figures, and whether live p99 during the recoveries is
within ``--goal-ms``. The clients are the node's recoveries, not sockets: what is measured
is the read, the routing, the hand-over and the replies' encoding, not their writing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import sys
import time
import uuid
from typing import Any

import orjson

from benchmarks.children import Child
from benchmarks.stats import Histogram
from tidings.config import AmqpSettings, ChannelOptions, Settings
from tidings.log.rabbitmq import RabbitMqLog
from tidings.node import Node
from tidings.protocol.messages import RecoverPosition
from tidings.protocol.operations import NotRecovered, Recovered
from tidings.protocol.subscribing import subscribe_result
from tidings.publication import ChannelEvent, Publication

__all__ = ["main"]

# One publisher process keeps this many events/s on this host; the fill uses several.
_PER_PUBLISHER = 15_000


class LiveSubscriber:
    """A subscriber that records how long each publication took since it was published."""

    def __init__(self, latencies: list[Histogram]) -> None:
        self._latencies = latencies

    def deliver(self, pub: Publication) -> None:
        stamp = orjson.loads(pub.data).get("ts")
        if stamp is not None:
            self._latencies[-1].add((time.time_ns() - stamp) / 1000)

    def deliver_event(self, event: ChannelEvent) -> None:
        pass


class LoopProbe:
    """How late the loop wakes a 1 ms sleep: the length of the turns that ran meanwhile."""

    def __init__(self) -> None:
        self.lags = [Histogram()]
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def next_phase(self) -> dict[str, float | None]:
        """The lags of the phase that ends (ms), and starts the next."""
        summary = self.lags[-1].summary_ms()
        self.lags.append(Histogram())
        return summary

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lags[-1].add(max(0.0, time.perf_counter() - started - 0.001) * 1e6)


async def recover_and_subscribe(
    node: Node, channel: str, position: RecoverPosition
) -> Recovered | NotRecovered:
    """A client's recovery from the log, then, in the same step, its subscribe from where
    the read stopped and its encoded result (what a session does on the read's end)."""
    found = (await node.recover_from_log([channel], position))[channel]
    if isinstance(found, Recovered):
        since = RecoverPosition(found.position, position.epoch)
        outcome = node.subscribe(Sink(), channel, since)
        assert outcome.recovery is not None
        limit = node.settings.channels.recovery_max_publications
        recovery = outcome.recovery.after_log(found.publications, limit)
        reply = subscribe_result(dataclasses.replace(outcome, recovery=recovery))
        orjson.dumps({"id": 1, "subscribe": reply})
        if not recovery.recovered:
            return NotRecovered("hand-over")
    return found


class Sink:
    """A recovered client's subscription: what comes live after it is dropped."""

    def deliver(self, pub: Publication) -> None:
        pass

    def deliver_event(self, event: ChannelEvent) -> None:
        pass


async def publish(
    url: str, exchange: str, *, events: int, users: int, rate: float, label: str, seed: int
) -> list[Child]:
    """Starts publisher processes for ``events`` events at ``rate`` in all (waits until
    each is connected, then lets them go); returns them to be waited for."""
    count = max(1, int(rate // _PER_PUBLISHER) + (rate % _PER_PUBLISHER > 0))
    children = []
    for index in range(count):
        config = {
            "amqp_url": url,
            "exchange": exchange,
            "workload": "personal",
            "rate": rate / count,
            "duration_s": events / rate,
            "run_id": label,
            "seed": seed,
            "index": index,
            "n_users": users,
        }
        children.append(await Child.spawn("publisher", config, f"{label}-{index}"))
    for child in children:
        assert (await child.read(30))["phase"] == "ready"
    for child in children:
        child.send("go")
    return children


async def finished(children: list[Child], timeout_s: float) -> int:
    """Waits for every publisher's ``done``; returns how many events they published."""
    published = 0
    for child in children:
        while (record := await child.read(timeout_s))["phase"] != "done":
            pass
        published += int(record["published"])
        await child.close()
    return published


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    exchange, stream = f"bench.recovery.{suffix}", f"bench.recovery.{suffix}.log"
    amqp = AmqpSettings(url=opts.amqp_url, exchange=exchange, stream=stream, reader="stream")
    figures: dict[str, Any] = {"events": opts.events, "users": opts.users}
    # The stream and exchange exist before the fill: a node declares them, and leaves.
    declaring = RabbitMqLog(amqp)
    await declaring.start(Node(Settings(amqp=amqp), declaring), 0)
    await declaring.close()

    started = time.monotonic()
    fill = await publish(
        opts.amqp_url,
        exchange,
        events=opts.events,
        users=opts.users,
        rate=opts.fill_rate,
        label="fill",
        seed=1,
    )
    figures["filled"] = await finished(fill, opts.events / opts.fill_rate + 300)
    figures["fill_s"] = round(time.monotonic() - started, 1)

    options = ChannelOptions(history_size=100, history_ttl=3600)
    settings = Settings(amqp=amqp, channels=options)
    event_log = RabbitMqLog(amqp)
    node = Node(settings, event_log, name="bench-recovery")
    await node.start()
    try:
        figures |= await measure(node, opts, exchange)
    finally:
        await node.stop()
        await drop(opts.amqp_url, exchange, stream)
    return figures


async def measure(node: Node, opts: argparse.Namespace, exchange: str) -> dict[str, Any]:
    figures: dict[str, Any] = {"head": node.head}
    epoch = node.log.epoch
    rng = random.Random(7)
    head = node.head

    # 1. One client, alone.
    cpu, wall = time.process_time(), time.monotonic()
    found = await recover_and_subscribe(node, "user#42", RecoverPosition(head - opts.behind, epoch))
    figures["one"] = {
        "behind": opts.behind,
        "wall_ms": round((time.monotonic() - wall) * 1000, 1),
        "cpu_ms": round((time.process_time() - cpu) * 1000, 1),
        "recovered": isinstance(found, Recovered),
        "publications": len(found.publications) if isinstance(found, Recovered) else 0,
    }

    # 2. Live delivery, quiet.
    latencies = [Histogram()]
    for user in range(opts.live):
        node.subscribe(LiveSubscriber(latencies), f"user#{user}", None)
    duration = opts.quiet + opts.busy_max + 5
    live = await publish(
        opts.amqp_url,
        exchange,
        events=int(opts.live_rate * duration),
        users=opts.live,
        rate=opts.live_rate,
        label="live",
        seed=2,
    )
    probe = LoopProbe()
    probe.start()
    await asyncio.sleep(opts.quiet)
    figures["live_quiet_ms"] = latencies[-1].summary_ms()
    figures["loop_lag_quiet_ms"] = probe.next_phase()

    # 3. Many clients at once, while the live events flow.
    latencies.append(Histogram())
    scans, records = node.recoverer.scans, node.recoverer.records
    head = node.head
    clients = [
        (f"user#{opts.live + n}", head - rng.randrange(1, opts.behind + 1))
        for n in range(opts.clients)
    ]
    cpu, wall = time.process_time(), time.monotonic()
    tasks = []
    for n, (channel, since) in enumerate(clients, 1):
        position = RecoverPosition(since, epoch)
        tasks.append(asyncio.ensure_future(recover_and_subscribe(node, channel, position)))
        if opts.per_turn and n % opts.per_turn == 0:
            await asyncio.sleep(0)  # as subscribes read from sockets come, a few per turn
    outcomes = await asyncio.gather(*tasks)
    busy_s = time.monotonic() - wall
    busy_cpu = time.process_time() - cpu
    # The latency of what was published while they ran (and a little after).
    await asyncio.sleep(min(1.0, opts.busy_max))
    figures["loop_lag_during_ms"] = probe.next_phase()
    await probe.stop()
    recovered = [o for o in outcomes if isinstance(o, Recovered)]
    figures["many"] = {
        "clients": opts.clients,
        "behind_up_to": opts.behind,
        "wall_ms": round(busy_s * 1000, 1),
        "cpu_ms": round(busy_cpu * 1000, 1),
        "recovered": len(recovered),
        "publications": sum(len(o.publications) for o in recovered),
        "passes": node.recoverer.scans - scans,
        "records_read": node.recoverer.records - records,
        "not_recovered": sorted({o.reason for o in outcomes if isinstance(o, NotRecovered)}),
    }
    figures["live_during_ms"] = latencies[-1].summary_ms()
    p99 = figures["live_during_ms"]["p99"]
    figures["goal"] = {
        "live_during_p99_ms": opts.goal_ms,
        "within": p99 is not None and p99 <= opts.goal_ms,
    }
    figures["live_published"] = await finished(live, duration + 60)
    return figures


async def drop(url: str, exchange: str, stream: str) -> None:
    import aiormq

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(stream)
        await channel.queue_delete(f"{stream}.epoch-lock")
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recovery", description=__doc__)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the stream")
    parser.add_argument("--users", type=int, default=100_000, help="users they go to")
    parser.add_argument("--fill-rate", type=float, default=30_000, help="events/s of the fill")
    parser.add_argument("--behind", type=int, default=10_000, help="records behind the head")
    parser.add_argument("--clients", type=int, default=10_000, help="recoveries at once")
    parser.add_argument("--live", type=int, default=1_000, help="live subscribers")
    parser.add_argument("--live-rate", type=float, default=1_000, help="live events/s")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds of quiet latency")
    parser.add_argument(
        "--per-turn", type=int, default=0, help="recoveries started per loop turn (0: all in one)"
    )
    parser.add_argument("--busy-max", type=float, default=10.0, help="longest busy phase, s")
    parser.add_argument(
        "--goal-ms",
        type=float,
        default=50.0,
        help="live p99 during the recoveries within which the run passes",
    )
    opts = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; the plain loop works too
        pass
    figures = asyncio.run(run(opts))
    figures["command"] = "python -m benchmarks.recovery " + " ".join(sys.argv[1:])
    figures["cpus"] = os.cpu_count()
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
