"""Tidings on a real 3-node RabbitMQ cluster (``scripts/ensure-rabbitmq-cluster.sh``) losing a
node: two tidings nodes, each given the three broker addresses in another order, clients on
both, events published at a steady rate throughout. The stream's leader node is stopped
(``rabbitmqctl stop_app``) and started again, then a follower. Every client must end with
every confirmed event exactly once and in order, without being disconnected; ``/readyz`` is
sampled all along, and the longest pause in delivery is reported.

The cluster's own nodes are stopped, never the machine's broker on 5672. The default run is
small (``TIDINGS_CLUSTER_CLIENTS``, default 50, at ``TIDINGS_CLUSTER_RATE`` events a second,
default 40); the issue's figure is ``TIDINGS_CLUSTER_CLIENTS=1000``.
``TIDINGS_CLUSTER_READER=amqp`` reads the stream over AMQP 0-9-1 instead of the stream
protocol.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pika
import pytest

from tests.system.harness import Node, RecoveringClient, loss_report, nodes, scaled, unique

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ensure-rabbitmq-cluster.sh"
NODE_NUMBERS = (1, 2, 3)
CLIENTS = int(os.environ.get("TIDINGS_CLUSTER_CLIENTS", "50"))
RATE = float(os.environ.get("TIDINGS_CLUSTER_RATE", "40"))
#: How tidings reads the stream (``amqp.reader``): ``auto`` is the stream protocol here.
READER = os.environ.get("TIDINGS_CLUSTER_READER", "auto")
#: Seconds of publishing before, during and after each outage.
CALM, OUTAGE = 4.0, 6.0


def amqp_url(n: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{5672 + n}/"


def stream_url(n: int) -> str:
    return f"rabbitmq-stream://guest:guest@127.0.0.1:{5552 + n}/"


def node_name(n: int) -> str:
    return f"tidings-{n}@localhost"


def cluster(*args: str, timeout: float = 180.0) -> str:
    """Runs the cluster script (``ctl N ...`` runs rabbitmqctl on node N)."""
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{SCRIPT.name} {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def broker_cluster() -> Iterator[None]:
    """The three nodes up and clustered (started by the script when they are not), and this
    process alone in stopping them: another test run on the machine waits for the lock."""
    base = Path(os.environ.get("TIDINGS_CLUSTER_DIR", "/tmp/tidings-rabbitmq-cluster"))
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cluster("ensure", timeout=600)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def names(broker_cluster: None) -> Iterator[tuple[str, str]]:
    exchange, stream = unique("cluster.events"), unique("cluster.log")
    yield exchange, stream
    for n in NODE_NUMBERS:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(amqp_url(n)))
        except pika.exceptions.AMQPError:
            continue
        ch = conn.channel()
        ch.queue_delete(stream)
        ch.exchange_delete(exchange)
        conn.close()
        return


def leader_of(stream: str, asking: int) -> int:
    """The number of the node leading ``stream``, as node ``asking`` sees it."""
    out = cluster("ctl", str(asking), "list_queues", "name", "leader", "--formatter", "json")
    for row in json.loads(out):
        if row["name"] == stream:
            return int(row["leader"].split("@")[0].rsplit("-", 1)[1])
    raise AssertionError(f"stream {stream} not found on node {asking}: {out}")


@dataclass
class SteadyPublisher:
    """Publishes ``{"i": n}`` to channel ``news`` at ``rate`` a second with confirms, moving
    to the next broker when one fails. ``confirmed`` must each arrive exactly once;
    ``uncertain`` (the publish failed midway) at most once."""

    exchange: str
    rate: float
    confirmed: list[int] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    sent_at: dict[int, float] = field(default_factory=dict)
    #: The longest wait for a confirm (or a failure): the broker's own pause.
    longest_confirm: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(scaled(60))

    def _connect(self, turn: int) -> pika.adapters.blocking_connection.BlockingChannel:
        while True:
            for k in range(len(NODE_NUMBERS)):
                n = NODE_NUMBERS[(turn + k) % len(NODE_NUMBERS)]
                try:
                    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(n)))
                except pika.exceptions.AMQPError:
                    continue
                channel = conn.channel()
                channel.confirm_delivery()
                return channel
            time.sleep(0.2)

    def _run(self) -> None:
        channel, turn, i = self._connect(0), 0, 0
        started = time.monotonic()
        while not self._stop.is_set():
            self._stop.wait(max(0.0, started + i / self.rate - time.monotonic()))
            self.sent_at[i] = time.time()
            try:
                channel.basic_publish(
                    self.exchange,
                    "x",
                    json.dumps({"i": i}).encode(),
                    pika.BasicProperties(headers={"x-tidings-channel": "news"}, delivery_mode=2),
                    mandatory=True,
                )
                self.confirmed.append(i)
            except (pika.exceptions.AMQPError, OSError):
                self.uncertain.append(i)
                turn += 1
                channel = self._connect(turn)
            self.longest_confirm = max(self.longest_confirm, time.time() - self.sent_at[i])
            i += 1
        channel.connection.close()


async def sample_readyz(
    http: aiohttp.ClientSession, node: Node, log: list[tuple[float, int]], stop: asyncio.Event
) -> None:
    """Appends (time, status) to ``log`` whenever ``/readyz`` changes, every 50 ms."""
    last = None
    while not stop.is_set():
        try:
            async with http.get(f"{node.url}/readyz", timeout=aiohttp.ClientTimeout(1)) as r:
                status = r.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        if status != last:
            log.append((time.time(), status))
            last = status
        await asyncio.sleep(0.05)


def not_ready_spans(log: list[tuple[float, int]], until: float) -> list[tuple[float, float]]:
    """The (start, end) of every stretch in which ``/readyz`` was not 200."""
    spans, start = [], None
    for t, status in log:
        if status != 200 and start is None:
            start = t
        elif status == 200 and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, until))
    return spans


def longest_pause(arrived: list[float], start: float, end: float) -> float:
    """The longest time without a delivery between ``start`` and ``end``."""
    times = [start] + [t for t in arrived if start <= t <= end] + [end]
    return max(b - a for a, b in itertools.pairwise(times))


async def until_all_have(clients: list[RecoveringClient], wanted: set[int], timeout: float) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while any(not wanted <= set(c.seen) for c in clients):
        if time.monotonic() > deadline:
            short = [c for c in clients if not wanted <= set(c.seen)]
            raise AssertionError(
                f"{len(short)} clients short: {short[0].user}: "
                f"{loss_report(sorted(wanted), short[0].seen)}"
            )
        await asyncio.sleep(0.1)


async def stopped(stream: str, n: int, what: str, events: list[tuple[str, float, float]]) -> None:
    """Stops node ``n``'s application for ``OUTAGE`` seconds, then starts it again."""
    down_at = time.time()
    await asyncio.to_thread(cluster, "ctl", str(n), "stop_app")
    try:
        await asyncio.sleep(OUTAGE)
    finally:
        await asyncio.to_thread(cluster, "ctl", str(n), "start_app")
        await asyncio.to_thread(cluster, "ctl", str(n), "await_startup")
    events.append((f"{what} {node_name(n)}", down_at, time.time()))


async def test_a_node_of_the_cluster_stops_and_comes_back(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    exchange, stream = names
    # Node A tries broker 1 first, node B broker 2: the stopped nodes hold links of both.
    configs = []
    for first in (0, 1):
        order = [NODE_NUMBERS[(first + k) % 3] for k in range(3)]
        configs.append(
            f"""
[amqp]
urls = {json.dumps([amqp_url(n) for n in order])}
stream_urls = {json.dumps([stream_url(n) for n in order])}
stream_replicas = 3
reader = "{READER}"
exchange = "{exchange}"
stream = "{stream}"
reconnect_interval = "0.2s"
"""
        )
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        with nodes(tmp_path, 1, "--workers", "1", config=configs[0]) as (node_a,), nodes(
            tmp_path, 1, "--workers", "1", config=configs[1]
        ) as (node_b,):
            tidings = (node_a, node_b)
            leader = leader_of(stream, 3)
            clients = [
                RecoveringClient(tidings[i % 2].ws_url, f"u{i}", "news", http)
                for i in range(CLIENTS)
            ]
            for c in clients:
                c.start()
                await asyncio.sleep(0.002)
            await asyncio.wait_for(
                asyncio.gather(*(c.subscribed.wait() for c in clients)), scaled(60)
            )
            readyz: list[list[tuple[float, int]]] = [[], []]
            stop_sampling = asyncio.Event()
            samplers = [
                asyncio.create_task(sample_readyz(http, node, log, stop_sampling))
                for node, log in zip(tidings, readyz, strict=True)
            ]
            publisher = SteadyPublisher(exchange, RATE)
            publisher.start()
            began = time.time()
            outages: list[tuple[str, float, float]] = []
            try:
                await asyncio.sleep(CALM)
                await stopped(stream, leader, "leader", outages)
                await asyncio.sleep(CALM)
                new_leader = leader_of(stream, leader)
                follower = next(n for n in NODE_NUMBERS if n not in (new_leader, leader))
                await stopped(stream, follower, "follower", outages)
                await asyncio.sleep(CALM)
            finally:
                publisher.stop()
            ended = time.time()
            confirmed = set(publisher.confirmed)
            await until_all_have(clients, confirmed, 60)
            await asyncio.sleep(1.0)  # a duplicate would have arrived by now
            stop_sampling.set()
            await asyncio.gather(*samplers)
            for c in clients:
                await c.stop()
            logs = [node.log_text() for node in tidings]

    allowed = confirmed | set(publisher.uncertain)
    pauses = sorted(longest_pause(c.arrived, began, ended) for c in clients)
    by_node = [
        max(longest_pause(c.arrived, began, ended) for c in clients[k::2]) for k in range(2)
    ]
    delays = [
        t - publisher.sent_at[i] for c in clients for i, t in zip(c.seen, c.arrived, strict=True)
    ]
    spans = [not_ready_spans(log, ended) for log in readyz]
    print(
        f"\n{CLIENTS} clients on 2 tidings nodes, {len(confirmed)} events confirmed at "
        f"{RATE:g}/s ({len(publisher.uncertain)} uncertain); outages: "
        + "; ".join(f"{what} for {up - down:.1f}s" for what, down, up in outages)
        + f"\nlongest delivery pause: {pauses[-1]:.2f}s (on tidings node A {by_node[0]:.2f}s, "
        f"B {by_node[1]:.2f}s; median client {pauses[len(pauses) // 2]:.2f}s); longest "
        f"publish-to-delivery {max(delays):.2f}s; longest wait for a publish confirm "
        f"{publisher.longest_confirm:.2f}s"
        + "".join(
            f"\n/readyz of tidings node {'AB'[k]} not 200: "
            + (", ".join(f"{a - began:.1f}s..{b - began:.1f}s" for a, b in spans[k]) or "never")
            for k in range(2)
        )
    )
    for c in clients:
        assert c.connects == 1, f"{c.user} was disconnected: {c.close_codes} {c.errors}"
        assert not c.errors, f"{c.user}: {c.errors}"
        assert c.seen == sorted(c.seen), f"{c.user}: {loss_report(sorted(confirmed), c.seen)}"
        assert len(c.seen) == len(set(c.seen)), f"{c.user}: duplicates"
        assert confirmed <= set(c.seen) <= allowed, loss_report(sorted(confirmed), c.seen)
    for k, log in enumerate(readyz):
        assert log[-1][1] == 200, f"tidings node {'AB'[k]} not ready at the end:\n{logs[k]}"
    # The leader's loss moves the stream: every reader re-attaches, and says so meanwhile.
    _, leader_down, leader_up = outages[0]
    assert any(
        a < leader_up and b > leader_down for node_spans in spans for a, b in node_spans
    ), f"/readyz stayed 200 through the leader's outage: {readyz}"
