"""Graceful shutdown: stop accepting, close every client with 3001, finish in bounded time."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, connected, open_ws, scaled, token
from tests.integration.test_limits import RawClient

pytestmark = pytest.mark.integration


async def test_shutdown_closes_every_client_with_3001(server: LiveServer) -> None:
    alice, _ = await connected(server, subscribe=("news",))
    bob, _ = await connected(server, "bob", channels=["news"])
    uni = await open_ws(server, "/connection/uni_websocket")
    await uni.ws.send_str(orjson.dumps({"token": token("carol")}).decode())
    assert "connect" in await uni.message()
    unauthenticated = await open_ws(server)

    loop = asyncio.get_running_loop()
    started = loop.time()
    stopping = asyncio.create_task(server.stop())
    codes = await asyncio.gather(
        *(c.close_code(timeout=3) for c in (alice, bob, uni, unauthenticated))
    )
    assert codes == [3001, 3001, 3001, 3001]
    await asyncio.wait_for(stopping, scaled(5))
    assert loop.time() - started < scaled(2)  # clients that answer the close do not hold it up
    with pytest.raises(aiohttp.ClientConnectionError):
        await open_ws(server)


async def test_shutdown_does_not_wait_forever_for_a_client_that_never_reads(
    serve: ServerFactory,
) -> None:
    server = await serve({"client.max_queue_bytes": 1024})
    reader, _ = await connected(server)
    stuck = await RawClient.connect(server.port)
    try:
        await stuck.send({"id": 1, "connect": {"token": token("stuck")}})
        assert b'"connect"' in await stuck.read_frame()
        loop = asyncio.get_running_loop()
        started = loop.time()
        stopping = asyncio.create_task(server.stop())
        assert await reader.close_code() == 3001
        await asyncio.wait_for(stopping, scaled(8))
        # Bounded by the close grace (2 s) and server.shutdown_timeout (2 s in these tests).
        assert loop.time() - started < scaled(5)
        assert not server.node.live
    finally:
        stuck.close()
