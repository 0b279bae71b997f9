"""A client that stops reading is cut with 3008; memory comes back and nobody else waits.

The slow client is a bare socket with a 4 KiB receive window that completes the upgrade,
connects, subscribes, and never reads again. The node (a real ``tidings serve`` process)
has ``client.max_queue_bytes = 64 KiB``. Twenty ordinary clients on the same channel
measure publish-to-receive latency before, during and after the episode.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.integration.test_limits import RawClient
from tests.system.harness import (
    API_KEY,
    SECRET,
    RecoveringClient,
    loss_report,
    metrics_of,
    nodes,
    scaled,
)
from tidings.auth import mint_token

pytestmark = pytest.mark.integration

OTHERS = 20
PAD = "x" * 32_000
MiB = 1 << 20


class RssSampler:
    """Samples a process's RSS every 20 ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def test_slow_client_is_cut_and_others_are_unaffected(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # Short history (and so a short memory-log retention): what the log and the history
    # hold on purpose must not hide what the slow client would hold by mistake.
    env = {
        "TIDINGS_CLIENT_MAX_QUEUE_BYTES": "65536",
        "TIDINGS_CHANNELS_HISTORY_SIZE": "10",
        "TIDINGS_CHANNELS_HISTORY_TTL": "1s",
    }
    with nodes(tmp_path, 1, env=env) as (node,):
        proc = psutil.Process(node.proc.pid)
        sent_at: dict[int, float] = {}
        counter = 0

        async def publish(n: int, rate: float) -> None:
            nonlocal counter
            for _ in range(n):
                i = counter
                counter += 1
                sent_at[i] = time.time()
                async with http.post(
                    f"{node.url}/api/publish",
                    json={"channel": "feed", "data": {"i": i, "pad": PAD}},
                    headers={"X-API-Key": API_KEY},
                ) as r:
                    assert r.status == 200, await r.text()
                await asyncio.sleep(1 / rate)

        def latencies(first: int, last: int) -> list[float]:
            out = []
            for c in others:
                for i, arrived in zip(c.seen, c.arrived, strict=True):
                    if first <= i < last:
                        out.append(arrived - sent_at[i])
            return sorted(out)

        others = [RecoveringClient(node.ws_url, f"o{i}", "feed", http) for i in range(OTHERS)]
        for c in others:
            c.start()
        await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in others)), scaled(10))

        # A: before the episode; the baseline is taken in the steady state of this traffic.
        await publish(300, 200)
        await _all_have(others, counter)
        rss_before = proc.memory_info().rss
        start_b = counter

        # B: the slow client joins and stops reading; publish until the node cuts it.
        slow = await RawClient.connect(node.port)
        try:
            await slow.send(
                {"id": 1, "connect": {"token": mint_token(SECRET, "slow")}},
                {"id": 2, "subscribe": {"channel": "feed"}},
            )
            first = await slow.read_frame()
            assert b'"connect"' in first
            if b'"id":2' not in first:
                assert b'"id":2' in await slow.read_frame()
            cut_after = None
            with RssSampler(node.proc.pid) as sampler:
                for _ in range(60):  # at most 600 events of 32 kB
                    await publish(10, 100)
                    if metrics_of(node).get(("tidings_slow_disconnects_total", ()), 0) >= 1:
                        cut_after = counter - start_b
                        break
            assert cut_after is not None, "the slow client was never cut"
            end_b = counter

            # C: after the episode.
            await publish(20, 50)
            await _all_have(others, counter)
            await asyncio.sleep(1.5)  # past the retention: the next event trims the log
            await publish(1, 100)
            await _all_have(others, counter)
            rss_after = proc.memory_info().rss
        finally:
            slow.close()

        metrics = metrics_of(node)
        assert metrics["tidings_slow_disconnects_total", ()] == 1
        assert metrics["tidings_disconnects_total", (("code", "3008"),)] == 1
        assert metrics["tidings_connections", (("transport", "websocket"),)] == OTHERS
        async with http.get(f"{node.url}/api/info", headers={"X-API-Key": API_KEY}) as r:
            assert (await r.json())["result"]["nodes"][0]["num_clients"] == OTHERS

        for c in others:
            assert c.seen == list(range(counter)), loss_report(list(range(counter)), c.seen)
            assert c.connects == 1, f"{c.user} was disconnected: {c.close_codes}"
        lat_a, lat_b = latencies(0, start_b), latencies(start_b, end_b)
        lat_c = latencies(end_b, counter)
        print(
            f"\nslow client cut after {cut_after} events of 32 kB "
            f"({cut_after * len(PAD) / MiB:.1f} MiB); RSS before {rss_before / MiB:.1f} MiB, "
            f"peak {sampler.peak / MiB:.1f} MiB, after {rss_after / MiB:.1f} MiB"
        )
        for name, lat in (("before", lat_a), ("during", lat_b), ("after", lat_c)):
            print(
                f"latency of the {OTHERS} others {name}: median "
                f"{statistics.median(lat) * 1000:.1f} ms, p99 "
                f"{lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
            )
        # Generous bounds: what matters is that one slow reader does not stall the rest.
        assert lat_b[-1] < scaled(1.0), f"max latency during the episode {lat_b[-1]:.3f} s"
        assert rss_after < rss_before + 8 * MiB, "RSS did not come back near the baseline"
        for c in others:
            await c.stop()


async def _all_have(clients: list[RecoveringClient], count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while any(len(c.seen) < count for c in clients):
        assert time.monotonic() < deadline, [len(c.seen) for c in clients]
        await asyncio.sleep(0.02)
