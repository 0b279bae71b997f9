"""A worker of ``tidings serve --workers 2`` killed with SIGKILL: its clients reconnect,
recover from their last position on whichever worker takes them, and lose nothing; the
supervisor starts a new worker in its place.

``TIDINGS_CHAOS_ROUNDS`` (default 1) kills that many times in one run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.system.harness import (
    API_KEY,
    Node,
    Publisher,
    RecoveringClient,
    loss_report,
    nodes,
    scaled,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration, pytest.mark.chaos]

CLIENTS = 40
ROUNDS = int(os.environ.get("TIDINGS_CHAOS_ROUNDS", "1"))


def _workers(node: Node) -> list[psutil.Process]:
    return psutil.Process(node.proc.pid).children()


def _established(worker: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in worker.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def _both_ready(node: Node, timeout: float = 30) -> None:
    seen: set[str] = set()
    deadline = time.monotonic() + scaled(timeout)
    while len(seen) < 2:
        assert time.monotonic() < deadline, f"ready workers: {seen}"
        request = urllib.request.Request(node.url + "/api/info", headers={"X-API-Key": API_KEY})
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                info = json.loads(r.read())["result"]["nodes"][0]  # the answering worker
            if info["ready"]:
                seen.add(info["name"])
        except OSError:
            time.sleep(0.05)


async def test_killed_worker_clients_recover_everything(
    tmp_path: Path, names: tuple[str, str], http: aiohttp.ClientSession
) -> None:
    exchange, stream = names
    args = ["--amqp-url", "amqp://guest:guest@127.0.0.1:5672/"]
    args += ["--exchange", exchange, "--stream", stream, "--workers", "2"]
    publisher = await asyncio.to_thread(Publisher, exchange)
    with nodes(tmp_path, 1, *args) as (node,):
        await asyncio.to_thread(_both_ready, node)
        clients = [RecoveringClient(node.ws_url, f"u{i}", "news", http) for i in range(CLIENTS)]
        for c in clients:
            c.start()
        await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in clients)), scaled(20))

        per_round = 150
        total = per_round * ROUNDS
        stop_publishing = threading.Event()

        def publish_all() -> None:
            for i in range(total):
                publisher.publish("x", {"i": i}, {"x-tidings-channel": "news"})
                time.sleep(0.01)
            stop_publishing.set()

        run = asyncio.get_running_loop().run_in_executor(None, publish_all)
        killed: list[tuple[int, int]] = []
        for _ in range(ROUNDS):
            await asyncio.sleep(0.6)
            workers = _workers(node)
            assert len(workers) == 2, workers
            load = {w.pid: _established(w, node.port) for w in workers}
            victim = max(workers, key=lambda w: load[w.pid])
            os.kill(victim.pid, signal.SIGKILL)
            killed.append((victim.pid, load[victim.pid]))
            # The supervisor replaces it; the new one warms up, then takes connections.
            deadline = time.monotonic() + scaled(30)
            while True:
                pids = {w.pid for w in _workers(node)}
                if len(pids) == 2 and victim.pid not in pids:
                    break
                assert time.monotonic() < deadline, f"worker not restarted: {pids}"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(_both_ready, node)
        await run

        deadline = time.monotonic() + scaled(60)
        while any(len(c.seen) < total for c in clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in clients:
            await c.stop()

        expected = list(range(total))
        lost = sum(len(set(expected) - set(c.seen)) for c in clients)
        duplicated = sum(len(c.seen) - len(set(c.seen)) for c in clients)
        reconnected = [c for c in clients if c.connects > 1]
        print(
            f"\nkilled {len(killed)} worker(s) holding {[n for _, n in killed]} of {CLIENTS} "
            f"clients; {len(reconnected)} clients reconnected "
            f"({sum(c.recoveries for c in clients)} recoveries, "
            f"{sum(c.failed_recoveries for c in clients)} failed); {total} events each, "
            f"{lost} lost, {duplicated} duplicated"
        )
        assert all(n > 0 for _, n in killed), "a killed worker held no client"
        assert len(reconnected) >= killed[0][1]
        for c in clients:
            assert c.seen == expected, f"{c.user}: {loss_report(expected, c.seen)}"
            assert c.failed_recoveries == 0, c.user
            assert c.offsets == sorted(set(c.offsets))
        assert "restarting it" in node.log_text()
    publisher.close()
