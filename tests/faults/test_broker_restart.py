"""RabbitMQ stopped and started again (``rabbitmqctl stop_app`` / ``start_app``) under a
thousand connected clients: ``/readyz`` says 503 while the broker is away and 200 once
it is back, the clients stay connected, and every one of them ends with every event
exactly once, in order.

Events are published only while the broker is up (nothing can be published to a stopped
broker); what is tested is that the node resumes from its own last position, with no gap
and no repeat. ``tests/system/test_rabbitmq.py`` covers events published while the node
is cut off from a running broker.

This test stops the machine's RabbitMQ for a few seconds: do not run it while anything
else uses that broker. ``TIDINGS_CHAOS_ROUNDS`` (default 1) repeats the stop/start;
``TIDINGS_CHAOS_CLIENTS`` (default 1000) sets the number of clients.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import pytest

from tests.system.harness import (
    Node,
    Publisher,
    RecoveringClient,
    loss_report,
    nodes,
    rabbitmqctl,
    scaled,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration, pytest.mark.chaos]

CLIENTS = int(os.environ.get("TIDINGS_CHAOS_CLIENTS", "1000"))
ROUNDS = int(os.environ.get("TIDINGS_CHAOS_ROUNDS", "1"))
PER_PHASE = 50


async def _readyz(http: aiohttp.ClientSession, node: Node) -> int:
    async with http.get(f"{node.url}/readyz") as r:
        return r.status


async def _until_readyz(
    http: aiohttp.ClientSession, node: Node, status: int, timeout: float
) -> float:
    """Polls ``/readyz`` until it answers ``status``; returns how long that took."""
    started = time.monotonic()
    while (got := await _readyz(http, node)) != status:
        assert time.monotonic() - started < scaled(timeout), f"/readyz stayed {got}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def _all_have(clients: list[RecoveringClient], count: int, timeout: float) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while any(len(c.seen) < count for c in clients):
        if time.monotonic() > deadline:
            short = [c for c in clients if len(c.seen) < count]
            raise AssertionError(f"{len(short)} clients short of {count}: {short[0].user}")
        await asyncio.sleep(0.05)


async def _publish(exchange: str, first: int, count: int) -> None:
    def run() -> None:
        publisher = Publisher(exchange)
        try:
            for i in range(first, first + count):
                publisher.publish("x", {"i": i}, {"x-tidings-channel": "news"})
        finally:
            publisher.close()

    await asyncio.to_thread(run)


async def test_broker_restart_under_a_thousand_clients(
    tmp_path: Path, names: tuple[str, str], http: aiohttp.ClientSession
) -> None:
    exchange, stream = names
    args = ["--amqp-url", "amqp://guest:guest@127.0.0.1:5672/"]
    args += ["--exchange", exchange, "--stream", stream, "--workers", "1"]
    with nodes(tmp_path, 1, *args) as (node,):
        clients = [RecoveringClient(node.ws_url, f"u{i}", "news", http) for i in range(CLIENTS)]
        for c in clients:
            c.start()
            await asyncio.sleep(0.001)  # a connection storm is not what is tested here
        await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in clients)), scaled(120))
        published = 0
        outages: list[tuple[float, float]] = []
        for _ in range(ROUNDS):
            await _publish(exchange, published, PER_PHASE)
            published += PER_PHASE
            await _all_have(clients, published, 60)
            try:
                await asyncio.to_thread(rabbitmqctl, "stop_app")
                down = await _until_readyz(http, node, 503, 30)
                await asyncio.sleep(1)
                assert await _readyz(http, node) == 503
            finally:
                await asyncio.to_thread(rabbitmqctl, "start_app")
            up = await _until_readyz(http, node, 200, 90)
            outages.append((down, up))
        await _publish(exchange, published, PER_PHASE)
        published += PER_PHASE
        await _all_have(clients, published, 60)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive by now
        for c in clients:
            await c.stop()

    expected = list(range(published))
    lost = sum(len(set(expected) - set(c.seen)) for c in clients)
    duplicated = sum(len(c.seen) - len(set(c.seen)) for c in clients)
    print(
        f"\nbroker restarted {ROUNDS}x under {CLIENTS} clients; /readyz 503 after "
        f"{[f'{d:.1f}s' for d, _ in outages]}, 200 again after "
        f"{[f'{u:.1f}s' for _, u in outages]} of start_app; {published} events each, "
        f"{lost} lost, {duplicated} duplicated, "
        f"{sum(c.connects - 1 for c in clients)} client reconnects"
    )
    for c in clients:
        assert c.seen == expected, f"{c.user}: {loss_report(expected, c.seen)}"
        assert c.connects == 1, f"{c.user} was disconnected: {c.close_codes}"
