"""A bounded soak: N clients churn (connect, subscribe with recovery, receive, disconnect)
against one ``tidings serve`` process while events flow; memory and descriptors of the
process are sampled throughout.

Bounds (stated here, checked below):

- nothing lost, nothing duplicated: every client, across all its reconnections, sees every
  event exactly once, in order, and no recovery fails;
- open file descriptors of the node after every client left == before any came;
- RSS in the steady state (from 25 % of the run to its end) grows by at most 32 MiB, and
  does not grow further once every client left. (Measured: about +15 MiB in the first
  20 s and +18 MiB over 150 s at 115 reconnections a second, flattening; in-process, the
  node's Python object counts stay flat over such a run, so what remains is the
  allocator's high-water mark, not held objects.)

Defaults keep it near 20 s: ``TIDINGS_SOAK_SECONDS`` (20), ``TIDINGS_SOAK_CONNECTIONS``
(200), ``TIDINGS_SOAK_RATE`` (events per second, 20). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.system.harness import API_KEY, RecoveringClient, loss_report, nodes, scaled

pytestmark = [pytest.mark.soak, pytest.mark.integration]

SECONDS = float(os.environ.get("TIDINGS_SOAK_SECONDS", "20"))
CONNECTIONS = int(os.environ.get("TIDINGS_SOAK_CONNECTIONS", "200"))
RATE = float(os.environ.get("TIDINGS_SOAK_RATE", "20"))
MiB = 1 << 20


class Sampler:
    """RSS and open descriptors of a process, every ``interval`` seconds, in a thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[float, int, int]:
        return time.monotonic(), self.proc.memory_info().rss, self.proc.num_fds()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def test_churn_soak(tmp_path: Path) -> None:
    env = {"TIDINGS_CLIENT_MAX_CONNECTIONS_PER_USER": "0"}
    with nodes(tmp_path, 1, env=env) as (node,):
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            sampler = Sampler(node.proc.pid)
            await asyncio.sleep(0.5)  # the readiness probe's socket closes
            _, rss_before, fds_before = sampler.sample()
            clients = [
                RecoveringClient(
                    node.ws_url, f"soak{i}", "soak", http, reconnect_delay=random.uniform(0, 0.3)
                )
                for i in range(CONNECTIONS)
            ]
            for c in clients:
                c.start()
            await asyncio.wait_for(
                asyncio.gather(*(c.subscribed.wait() for c in clients)), scaled(60)
            )
            published = 0
            running = True

            async def publish() -> None:
                nonlocal published
                started = time.monotonic()
                while running:
                    async with http.post(
                        f"{node.url}/api/publish",
                        json={"channel": "soak", "data": {"i": published}},
                        headers={"X-API-Key": API_KEY},
                    ) as r:
                        assert r.status == 200, await r.text()
                    published += 1
                    await asyncio.sleep(max(0.0, started + published / RATE - time.monotonic()))

            async def churn(c: RecoveringClient) -> None:
                while running:
                    await asyncio.sleep(random.uniform(0.5, 3.0))
                    if running:
                        await c.bounce()

            with sampler:
                begun = time.monotonic()
                tasks = [asyncio.create_task(publish())]
                tasks += [asyncio.create_task(churn(c)) for c in clients]
                await asyncio.sleep(SECONDS)
                running = False
                await asyncio.gather(*tasks)
                # Let every client catch up (recovering if it was between connections).
                deadline = time.monotonic() + scaled(30)
                while any(len(c.seen) < published for c in clients):
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                _, rss_end, fds_end = sampler.sample()
                for c in clients:
                    await c.stop()
                # The node notices the last closes; its descriptors must come back.
                deadline = time.monotonic() + scaled(10)
                while True:
                    _, rss_after, fds_after = sampler.sample()
                    if fds_after <= fds_before or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)

        steady = [s for s in sampler.samples if s[0] >= begun + SECONDS * 0.25]
        rss_warm = steady[0][1] if steady else rss_end
        rss_peak = max(s[1] for s in sampler.samples)
        fds_peak = max(s[2] for s in sampler.samples)
        expected = list(range(published))
        lost = sum(len(set(expected) - set(c.seen)) for c in clients)
        duplicated = sum(len(c.seen) - len(set(c.seen)) for c in clients)
        connects = sum(c.connects for c in clients)
        delivered = sum(len(c.seen) for c in clients)
        failed = sum(c.failed_recoveries for c in clients)
        print(
            f"\nsoak: {SECONDS:.0f} s, {CONNECTIONS} clients, {connects} connections made, "
            f"{published} events published, {delivered} delivered, {lost} lost, "
            f"{duplicated} duplicated, {failed} failed recoveries\n"
            f"RSS before {rss_before / MiB:.1f} MiB, steady start {rss_warm / MiB:.1f} MiB, "
            f"end {rss_end / MiB:.1f} MiB, peak {rss_peak / MiB:.1f} MiB, "
            f"after {rss_after / MiB:.1f} MiB\n"
            f"fds before {fds_before}, peak {fds_peak}, end {fds_end}, after {fds_after}"
        )
        assert connects > CONNECTIONS * 2, "too little churn to mean anything"
        for c in clients:
            assert c.seen == expected, f"{c.user}: {loss_report(expected, c.seen)}"
            assert c.failed_recoveries == 0, c.user
        assert fds_after <= fds_before, "file descriptors leaked"
        assert rss_end - rss_warm <= 32 * MiB, "RSS grew in the steady state"
        assert rss_after - rss_end <= 4 * MiB, "RSS grew after every client left"
