"""Where the memory of an idle, authenticated, subscribed connection goes.

Runs a tidings node in this process with ``tracemalloc`` on, opens N WebSocket clients from
a subprocess (so that their memory is not counted), each connected with a token and
subscribed to its own user channel, and prints the Python heap per connection, grouped by
the source file that allocated it.

    python -m benchmarks.conn_memory --connections 2000

With ``--rss`` it measures a real ``tidings serve --demo`` process instead (uvloop, as in
production): its resident memory after 500 warm-up clients and after N more; the
difference per connection is what an idle connection costs.

    python -m benchmarks.conn_memory --rss --connections 5000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from pathlib import Path

import psutil
from aiohttp import web

from tidings.config import load_settings
from tidings.server import create_app
from tidings.transport.front import start_site

SECRET = "conn-memory-benchmark-secret-0123456789"

CLIENTS = """
import asyncio, json, sys
import aiohttp
from tidings.auth import mint_token

async def main(port, n, secret, first):
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets = []
    for i in range(first, first + n):
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/connection/websocket")
        token = mint_token(secret, f"u{i}")
        await ws.send_str(
            json.dumps({"id": 1, "connect": {"token": token}})
            + "\\n"
            + json.dumps({"id": 2, "subscribe": {"channel": f"user#u{i}"}})
        )
        await ws.receive()
        sockets.append(ws)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
"""


async def measure(connections: int, top: int) -> None:
    settings = load_settings(
        None,
        {},
        {
            "auth.hmac_secret": SECRET,
            "client.connections_per_ip_per_second": 0,
            "client.max_connections_per_user": 0,
        },
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = await start_site(runner, sock)
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    clients = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENTS,
        str(port),
        str(connections),
        SECRET,
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert clients.stdout is not None
        await asyncio.wait_for(clients.stdout.readline(), 600)
        await asyncio.sleep(1)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        clients.kill()
        await clients.wait()
        site.close()
        await runner.cleanup()
    stats = after.compare_to(before, "filename")
    total = sum(s.size_diff for s in stats)
    print(f"{connections} idle connections: {total / connections:,.0f} B of Python heap each")
    for s in stats[:top]:
        name = s.traceback[0].filename
        name = name.split("site-packages/")[-1].split("/src/")[-1]
        print(f"{s.size_diff / connections:8,.0f} B  {name}")


def _clients(port: int, first: int, n: int) -> subprocess.Popen[bytes]:
    """N connected clients in a subprocess, once it says they are all ready."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENTS, str(port), str(n), SECRET, str(first)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == b"ready", f"clients failed: {line!r}"
    return proc


def _settled_rss(pid: int) -> int:
    time.sleep(1.5)  # let the server finish answering and the allocator settle
    return int(psutil.Process(pid).memory_info().rss)


def measure_rss(connections: int, warm_up: int = 500) -> None:
    """Resident memory of a real ``tidings serve --demo`` process per idle connection."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_AUTH_HMAC_SECRET=SECRET,
        TIDINGS_CLIENT_CONNECTIONS_PER_IP_PER_SECOND="0",
        TIDINGS_CLIENT_MAX_CONNECTIONS_PER_USER="0",
    )
    tidings = str(Path(sys.executable).with_name("tidings"))
    server = subprocess.Popen(
        [tidings, "serve", "--demo", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    batches: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        idle = _settled_rss(server.pid)
        batches.append(_clients(port, 0, warm_up))
        warm = _settled_rss(server.pid)
        batches.append(_clients(port, warm_up, connections))
        full = _settled_rss(server.pid)
    finally:
        for proc in batches:
            proc.kill()
            proc.wait()
        server.terminate()
        server.wait(30)
    mib = 1 << 20
    print(
        f"RSS {idle / mib:.1f} MiB idle, {warm / mib:.1f} MiB with {warm_up} connections, "
        f"{full / mib:.1f} MiB with {warm_up + connections}"
    )
    print(f"{(full - warm) / connections / 1024:.2f} KiB per idle connection")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--rss", action="store_true", help="measure a real server process")
    args = parser.parse_args()
    if args.rss:
        measure_rss(args.connections)
        return
    # The default asyncio loop: tracemalloc sees its transports (uvloop's are C objects).
    asyncio.run(measure(args.connections, args.top))


if __name__ == "__main__":
    main()
