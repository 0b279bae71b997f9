"""Where the memory of an idle, authenticated, subscribed connection goes.

``python -m benchmarks.conn_memory --connections 2000`` runs a tidings node in this process
under ``tracemalloc`` and prints the Python heap per connection by the source file that
allocated it; ``--rss`` measures a real ``tidings serve`` process instead (uvloop, as in
production): its resident memory per connection past a warm-up. The connections are the
load generator's, each with a token, subscribed to its own user channel. ``--presence``
measures in-process twice in the same run, without presence and with ``presence``,
``join_leave`` and ``force_push_join_leave`` on the user channels (each connection in the
presence set, a listener of its channel, and sent its own join), and prints the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import tracemalloc

from aiohttp import web

from benchmarks.children import Child, read_all
from benchmarks.monitor import Monitor
from benchmarks.targets import TidingsTarget, free_port
from tidings.config import load_settings
from tidings.server import create_app
from tidings.transport.front import start_site

__all__ = ["PRESENCE", "main", "measure", "measure_rss"]

#: The settings ``--presence`` adds: every user channel with presence and join/leave pushes
#: (forced: the load generator's subscribe does not ask for them).
PRESENCE = {
    "channels.presence": True,
    "channels.join_leave": True,
    "channels.force_push_join_leave": True,
}


async def _clients(target: TidingsTarget, first: int, n: int, slot: int) -> Child:
    """N connections to ``target`` in a load-generator process, once all are subscribed."""
    config = {"target": target.name, "port": target.port, "source_ip": f"127.0.0.{2 + slot}",
              "user_first": first, "count": n, "workload": "personal", "run_id": "conn-memory",
              "seed": 0, "n_users": first + n, "secret": target.secret}
    child = await Child.spawn("loadgen", config, f"loadgen {slot}")
    ready = (await read_all([child], 600))[0]
    if ready["connected"] != n:
        raise RuntimeError(f"{ready['connected']} of {n} connections made: {ready['errors']}")
    return child


async def _stop(clients: list[Child]) -> None:
    for child in clients:
        child.send({"cmd": "stop"})
    for child in clients:
        await child.close()


async def measure(connections: int, top: int, presence: bool = False) -> float:
    """The Python heap an idle connection adds to a node in this process, by source file;
    prints it and returns the bytes per connection."""
    sock = socket.create_server(("127.0.0.1", 0))
    # Not started: it only tells the load generator where the node listens and its secret.
    target = TidingsTarget("", embedded=True, port=sock.getsockname()[1])
    settings = load_settings(None, {}, {
        "auth.hmac_secret": target.secret,
        "client.connections_per_ip_per_second": 0,
        **(PRESENCE if presence else {}),
    })
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = await start_site(runner, sock)
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    clients = [await _clients(target, 0, connections, 0)]
    try:
        await asyncio.sleep(1)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        await _stop(clients)
        site.close()
        await runner.cleanup()
    stats = after.compare_to(before, "filename")
    total = sum(s.size_diff for s in stats)
    label = "with presence and join_leave" if presence else "without presence"
    print(f"{connections} idle connections, {label}: {total / connections:,.0f} B of Python "
          "heap each")
    for s in stats[:top]:
        name = s.traceback[0].filename
        name = name.split("site-packages/")[-1].split("/src/")[-1]
        print(f"{s.size_diff / connections:8,.0f} B  {name}")
    return total / connections


async def _settled_rss(monitor: Monitor) -> int:
    await asyncio.sleep(1.5)  # let the server finish answering and the allocator settle
    return monitor.sample()[1]["server"].rss


async def measure_rss(connections: int, warm_up: int = 500) -> None:
    """Resident memory of a real ``tidings serve`` process per idle connection."""
    target = TidingsTarget("", embedded=True, port=free_port())
    await target.start(warm_up + connections, 1)
    clients: list[Child] = []
    try:
        monitor = Monitor({"server": target.server_pids()})
        idle = await _settled_rss(monitor)
        clients.append(await _clients(target, 0, warm_up, 0))
        warm = await _settled_rss(monitor)
        clients.append(await _clients(target, warm_up, connections, 1))
        full = await _settled_rss(monitor)
    finally:
        await _stop(clients)
        await target.stop()
    mib = 1 << 20
    print(
        f"RSS {idle / mib:.1f} MiB idle, {warm / mib:.1f} MiB with {warm_up} connections, "
        f"{full / mib:.1f} MiB with {warm_up + connections}"
    )
    print(f"{(full - warm) / connections / 1024:.2f} KiB per idle connection")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and measure."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conn_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--rss", action="store_true", help="measure a real server process")
    parser.add_argument("--presence", action="store_true",
                        help="in-process: without and with presence and join/leave, one run")
    args = parser.parse_args(argv)
    if args.rss and args.presence:
        parser.error("--presence measures in process; it does not combine with --rss")
    if args.rss:
        asyncio.run(measure_rss(args.connections))
        return
    # The default asyncio loop: tracemalloc sees its transports (uvloop's are C objects).
    without = asyncio.run(measure(args.connections, args.top))
    if args.presence:
        with_presence = asyncio.run(measure(args.connections, args.top, presence=True))
        print(f"presence and join_leave add {with_presence - without:,.0f} B per connection "
              f"({without:,.0f} -> {with_presence:,.0f} B)")


if __name__ == "__main__":
    main()
