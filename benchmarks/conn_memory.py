"""Where the memory of an idle, authenticated, subscribed connection goes.

Runs a tidings node in this process with ``tracemalloc`` on, opens N WebSocket clients from
a subprocess (so that their memory is not counted), each connected with a token and
subscribed to its own user channel, and prints the Python heap per connection, grouped by
the source file that allocated it.

    python -m benchmarks.conn_memory --connections 2000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc

from aiohttp import web

from tidings.config import load_settings
from tidings.server import create_app

SECRET = "conn-memory-benchmark-secret-0123456789"

CLIENTS = """
import asyncio, json, sys
import aiohttp
from tidings.auth import mint_token

async def main(port, n, secret):
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets = []
    for i in range(n):
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

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
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
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
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
        await runner.cleanup()
    stats = after.compare_to(before, "filename")
    total = sum(s.size_diff for s in stats)
    print(f"{connections} idle connections: {total / connections:,.0f} B of Python heap each")
    for s in stats[:top]:
        name = s.traceback[0].filename
        name = name.split("site-packages/")[-1].split("/src/")[-1]
        print(f"{s.size_diff / connections:8,.0f} B  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    # The default asyncio loop: tracemalloc sees its transports (uvloop's are C objects).
    asyncio.run(measure(args.connections, args.top))


if __name__ == "__main__":
    main()
