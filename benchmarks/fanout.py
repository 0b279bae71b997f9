"""How many publications per second one tidings process fans out to N local subscribers.

Starts ``tidings serve`` (embedded log) in a subprocess, opens N raw WebSocket clients in
this process, all subscribed to one channel, publishes through ``/api/broadcast`` from a
few concurrent senders for a fixed time, and reports publications/s, deliveries/s and the
server's CPU. Clients count pushes in the raw byte stream (no frame parsing) so that the
measuring side stays cheaper than the measured one.

    python -m benchmarks.fanout --subscribers 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import secrets
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

import aiohttp
import psutil

from tidings.auth import mint_token

MARKER = b'"push"'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Counter(asyncio.Protocol):
    """A raw WebSocket client that counts pushes in the byte stream."""

    def __init__(self, frame: bytes, ready: asyncio.Future[None]) -> None:
        self.frame = frame
        self.ready = ready
        self.count = 0
        self.tail = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they quack like one.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            if b"\r\n\r\n" in data:
                self.upgraded = True
                assert self.transport is not None
                self.transport.write(self.frame)
                data = data.split(b"\r\n\r\n", 1)[1]
            else:
                return
        buf = self.tail + data
        n = buf.count(MARKER)
        if n and not self.ready.done():
            self.ready.set_result(None)
        if b'"subscribe"' in buf and not self.ready.done():
            self.ready.set_result(None)
        self.count += n
        self.tail = buf[-(len(MARKER) - 1) :]


def _client_frame(token: str, channel: str) -> bytes:
    payload = (
        json.dumps({"id": 1, "connect": {"token": token}})
        + "\n"
        + json.dumps({"id": 2, "subscribe": {"channel": channel}})
    ).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    # Client frames are masked (RFC 6455 §5.3); the length here is under 64 KiB.
    length = bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    return b"\x81" + length + mask + masked


async def _connect(port: int, frame: bytes) -> Counter:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    transport, proto = await loop.create_connection(
        lambda: Counter(frame, ready), "127.0.0.1", port
    )
    key = base64.b64encode(os.urandom(16)).decode()
    transport.write(
        (
            f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(ready, 10)
    return proto


def _counting_process(port: int, secret: str, subscribers: int, pipe: Pipe) -> None:
    """Holds the subscribers in their own process; answers "count" requests on ``pipe``."""

    async def main() -> None:
        clients = []
        for i in range(subscribers):
            token = mint_token(secret, f"u{i}", ttl=3600)
            clients.append(await _connect(port, _client_frame(token, "bench")))
        pipe.send("ready")
        loop = asyncio.get_running_loop()
        while True:
            request = await loop.run_in_executor(None, pipe.recv)
            if request == "stop":
                break
            pipe.send(sum(c.count for c in clients))
        for c in clients:
            if c.transport is not None:
                c.transport.close()

    _install_uvloop()
    asyncio.run(main())


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


async def run(subscribers: int, seconds: float, senders: int) -> dict[str, float]:
    secret = secrets.token_urlsafe(32)
    key = secrets.token_urlsafe(24)
    port = _free_port()
    env = dict(
        os.environ,
        TIDINGS_AUTH_HMAC_SECRET=secret,
        TIDINGS_API_KEY=key,
        TIDINGS_CLIENT_CONNECTIONS_PER_IP_PER_SECOND="0",
        TIDINGS_SERVER_LOG_LEVEL="warning",
    )
    exe = Path(sys.executable).with_name("tidings")
    server = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=env)
    proc = psutil.Process(server.pid)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            here, there = mp.Pipe()
            counting = mp.Process(
                target=_counting_process, args=(port, secret, subscribers, there), daemon=True
            )
            counting.start()
            await asyncio.get_running_loop().run_in_executor(None, here.recv)

            def count() -> int:
                here.send("count")
                return int(here.recv())

            url = f"http://127.0.0.1:{port}/api/broadcast"
            headers = {"X-API-Key": key}
            published = 0
            deadline = time.monotonic() + seconds

            async def sender() -> None:
                nonlocal published
                while time.monotonic() < deadline:
                    body = {"channels": ["bench"], "data": {"t": time.time(), "n": published}}
                    async with http.post(url, json=body, headers=headers) as r:
                        r.raise_for_status()
                    published += 1

            proc.cpu_percent()
            start = time.monotonic()
            await asyncio.gather(*(sender() for _ in range(senders)))
            expected = published * subscribers
            # Let the last pushes drain before counting.
            for _ in range(50):
                if count() >= expected:
                    break
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - start
            cpu = proc.cpu_percent()
            delivered = count()
            rss = proc.memory_info().rss
            here.send("stop")
            counting.join(10)
    finally:
        server.terminate()
        server.wait(10)
    return {
        "subscribers": subscribers,
        "seconds": round(elapsed, 2),
        "publications": published,
        "publications_per_s": round(published / elapsed, 1),
        "deliveries_expected": expected,
        "deliveries": delivered,
        "deliveries_per_s": round(delivered / elapsed, 1),
        "server_cpu_percent": cpu,
        "server_rss_mib": round(rss / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args()
    _install_uvloop()
    print(json.dumps(asyncio.run(run(args.subscribers, args.seconds, args.senders))))


if __name__ == "__main__":
    main()
