"""How fast one tidings process fans publications out to N subscribers, without RabbitMQ.

``python -m benchmarks.fanout --subscribers 1000 --seconds 10`` starts ``tidings serve`` on
its embedded log, subscribes the load generator's N connections to one channel, publishes
through ``/api/broadcast`` from a few concurrent senders, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from typing import Any

import aiohttp
import orjson

from benchmarks.cell import DRAIN_STALL_S, collect, loadgen_configs, summarise
from benchmarks.children import Child, read_all
from benchmarks.monitor import Monitor, cpu_percent
from benchmarks.profiles import Cell
from benchmarks.targets import TidingsTarget, free_port

__all__ = ["main", "run"]


async def _send(http: aiohttp.ClientSession, target: TidingsTarget, run_id: str, index: int,
                until: float) -> dict[str, Any]:
    """One sender: a publication at a time, each carrying what the load generator counts
    (``run``, ``pub``, ``seq``, ``ts``); its ``done`` record, as a publisher's."""
    url = f"http://127.0.0.1:{target.port}/api/broadcast"
    headers = {"X-API-Key": target.api_key}
    seq = 0
    while time.monotonic() < until:
        data = {"run": run_id, "pub": index, "seq": seq, "ts": time.time_ns(), "user": None}
        async with http.post(url, json={"channels": ["bench"], "data": data},
                             headers=headers) as reply:
            reply.raise_for_status()
        seq += 1
    return {"phase": "done", "published": seq}


async def run(subscribers: int, seconds: float, senders: int) -> dict[str, Any]:
    """Measure once; the figures as a dict."""
    target = TidingsTarget("", embedded=True, port=free_port())
    cell = Cell("broadcast", subscribers, duration_s=seconds)
    run_id = f"fanout-{secrets.token_hex(4)}"
    await target.start(subscribers, 1)
    loadgens: list[Child] = []
    try:
        monitor = Monitor({"server": target.server_pids()})
        for config in loadgen_configs(target, cell, run_id, 0, 0):
            loadgens.append(await Child.spawn("loadgen", config, "loadgen"))
        ready = await read_all(loadgens, 120)
        connected = sum(r["connected"] for r in ready)
        if connected < subscribers:
            raise RuntimeError(f"{connected} of {subscribers} subscribers connected")
        for lg in loadgens:
            lg.send({"cmd": "start"})
        start = monitor.sample()
        start_ns = time.time_ns()
        async with aiohttp.ClientSession() as http:
            until = time.monotonic() + seconds
            done = list(await asyncio.gather(
                *(_send(http, target, run_id, i, until) for i in range(senders))))
        window = start_ns, time.time_ns()
        results, end = await collect(loadgens, monitor, done, cell, DRAIN_STALL_S)
    finally:
        for lg in loadgens:
            await lg.close()
        await target.stop()
    summary, notes = summarise(results, done, cell, window, DRAIN_STALL_S, 0, "publishing ended")
    span_s = (max(int(r["last_ns"]) for r in results) - window[0]) / 1e9
    published = summary["published"]
    return {
        "subscribers": subscribers,
        "seconds": round(span_s, 2),
        "publications": published,
        "publications_per_s": round(published / span_s, 1),
        "deliveries_expected": summary["expected"],
        "deliveries": summary["delivered"],
        "deliveries_per_s": summary["delivered_per_s"],
        "latency_p50_ms": summary["latency_p50_ms"],
        "latency_p99_ms": summary["latency_p99_ms"],
        "server_cpu_percent": cpu_percent(start, end, "server"),
        "server_rss_mib": round(end[1]["server"].rss / 2**20, 1),
        "status": summary["status"],
        **({"note": "; ".join(notes)} if notes else {}),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure, print the figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args.subscribers, args.seconds, args.senders))
    else:
        result = uvloop.run(run(args.subscribers, args.seconds, args.senders))
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
