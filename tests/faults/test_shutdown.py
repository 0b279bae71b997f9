"""Graceful shutdown of a real process on SIGTERM: it stops accepting, tells every client to
reconnect elsewhere (3001), writes out what it had already queued, and exits 0 within
``server.shutdown_timeout``."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.system.harness import (
    API_KEY,
    SECRET,
    Client,
    RawWebSocket,
    scaled,
    start_node,
)
from tidings.auth import mint_token

pytestmark = pytest.mark.integration

SHUTDOWN_TIMEOUT = 5.0
EVENTS = 300
#: 300 events of 30 kB: more than the kernel's socket buffers hold, so part of the lagging
#: client's backlog is still in the server's own buffer when SIGTERM arrives.
PAD = "y" * 30_000


async def _read_until_close(ws: RawWebSocket) -> tuple[list[int], int | None]:
    """Every publication's ``i`` and the close code; answers the close like a browser."""
    seen: list[int] = []
    while True:
        opcode, payload = await ws.frame(timeout=scaled(10))
        if opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            await ws.send_close(code or 1000)
            return seen, code
        for line in payload.split(b"\n"):
            obj = orjson.loads(line)
            pub = obj.get("push", {}).get("pub")
            if pub is not None:
                seen.append(pub["data"]["i"])


async def test_sigterm_drains_and_exits_cleanly(tmp_path: Path) -> None:
    env = {
        "TIDINGS_SERVER_SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT}s",
        "TIDINGS_CLIENT_MAX_QUEUE_BYTES": "32MiB",
    }
    node = start_node(tmp_path, env=env)
    try:
        readers = [Client(node.ws_url, f"r{i}", ["feed"]) for i in range(10)]
        for c in readers:
            await c.start()
        # A push-only client and an event stream get told too.
        async with aiohttp.ClientSession() as http:
            uni = await http.ws_connect(f"ws://127.0.0.1:{node.port}/connection/uni_websocket")
            await uni.send_str(orjson.dumps({"token": mint_token(SECRET, "uni")}).decode())
            assert "connect" in (await uni.receive_json(timeout=scaled(3)))
            sse = await http.get(
                f"{node.url}/events",
                params={"token": mint_token(SECRET, "sse", channels=["feed"])},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=scaled(15)),
            )
            assert sse.status == 200
            await sse.content.readuntil(b"\n\n")

            # A lagging reader: subscribed, then not reading while events pile up for it.
            lagging = await RawWebSocket.connect(node.port)
            await lagging.send(
                {"id": 1, "connect": {"token": mint_token(SECRET, "lagging")}},
                {"id": 2, "subscribe": {"channel": "feed"}},
            )
            replies = b""
            while b'"id":2' not in replies:
                replies += (await lagging.frame())[1]

            for i in range(EVENTS):
                async with http.post(
                    f"{node.url}/api/publish",
                    json={"channel": "feed", "data": {"i": i, "pad": PAD}},
                    headers={"X-API-Key": API_KEY},
                ) as r:
                    assert r.status == 200
            for c in readers:
                await c.wait_for(EVENTS)

            started = time.monotonic()
            node.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # Stops accepting: the port is closed (or answers 503 while it closes).
            refused = False
            try:
                async with http.get(f"{node.url}/connection/websocket") as r:
                    refused = r.status == 503
            except aiohttp.ClientConnectionError:
                refused = True
            assert refused, "a new connection was accepted after SIGTERM"
            assert node.proc.poll() is None, "exited with the lagging client's bytes unsent"

            # The lagging client now reads: every queued event, then 3001.
            lag_seen, lag_code = await _read_until_close(lagging)
            lagging.close()
            uni_msg = await uni.receive(timeout=scaled(5))
            sse_rest = await sse.content.read()
            sse.close()

            code = await asyncio.to_thread(node.proc.wait, scaled(SHUTDOWN_TIMEOUT + 5))
            elapsed = time.monotonic() - started
        for c in readers:
            await c.stop()
        assert code == 0, node.log_text()
        assert elapsed < SHUTDOWN_TIMEOUT, f"exit took {elapsed:.2f} s"
        assert lag_code == 3001
        assert lag_seen == list(range(EVENTS)), f"lagging client got {len(lag_seen)}"
        assert [c.close_code for c in readers] == [3001] * len(readers)
        assert all(len(c.pubs) == EVENTS for c in readers)
        assert uni_msg.type is aiohttp.WSMsgType.CLOSE and uni_msg.data == 3001
        assert b'"code":3001' in sse_rest
        print(f"\nSIGTERM to exit 0: {elapsed:.2f} s (shutdown_timeout {SHUTDOWN_TIMEOUT} s)")
    finally:
        node.stop(signal.SIGKILL)


async def test_a_client_that_never_reads_does_not_hold_the_shutdown(tmp_path: Path) -> None:
    env = {
        "TIDINGS_SERVER_SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT}s",
        "TIDINGS_CLIENT_MAX_QUEUE_BYTES": "32MiB",
    }
    node = start_node(tmp_path, env=env)
    stuck = await RawWebSocket.connect(node.port)
    try:
        await stuck.send(
            {"id": 1, "connect": {"token": mint_token(SECRET, "stuck")}},
            {"id": 2, "subscribe": {"channel": "feed"}},
        )
        async with aiohttp.ClientSession() as http:
            for i in range(EVENTS):
                async with http.post(
                    f"{node.url}/api/publish",
                    json={"channel": "feed", "data": {"i": i, "pad": PAD}},
                    headers={"X-API-Key": API_KEY},
                ) as r:
                    assert r.status == 200
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(node.proc.wait, scaled(SHUTDOWN_TIMEOUT + 5))
        elapsed = time.monotonic() - started
        assert code == 0, node.log_text()
        assert elapsed < SHUTDOWN_TIMEOUT, f"exit took {elapsed:.2f} s"
        print(f"\nSIGTERM to exit 0 with a client that never reads: {elapsed:.2f} s")
    finally:
        stuck.close()
        node.stop(signal.SIGKILL)
