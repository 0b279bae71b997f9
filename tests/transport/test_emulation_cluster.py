"""Emulation posts that land on another worker or node reach the session, forwarded
through the control plane (``cluster.py``) on the real RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.conftest import ServerFactory
from tests.system.harness import AMQP_URL, SECRET, TIME_SCALE, delete_amqp, nodes, unique
from tests.transport.test_emulated import Stream, connected
from tidings.auth import mint_token
from tidings.transport.emulation import EMULATION

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


@pytest.fixture
def amqp() -> Iterator[dict[str, Any]]:
    """Settings of a fresh exchange and stream, deleted afterwards (ask for it before
    ``serve``, so that the nodes stop before their stream is deleted)."""
    exchange, stream = unique("test.events"), unique("test.log")
    yield {"amqp.url": AMQP_URL, "amqp.exchange": exchange, "amqp.stream": stream}
    delete_amqp([exchange], [stream])


async def post(http: aiohttp.ClientSession, url: str, stream: Stream, *commands: Any) -> int:
    body = {
        "node": stream.node,
        "session": stream.session,
        "data": "\n".join(orjson.dumps(c).decode() for c in commands),
    }
    async with http.post(f"{url}/emulation", json=body) as r:
        return r.status


async def test_a_post_to_another_node_reaches_the_session(
    amqp: dict[str, Any], serve: ServerFactory
) -> None:
    a, b = await serve(amqp), await serve(amqp)
    assert a.app[EMULATION].worker != b.app[EMULATION].worker
    stream, _ = await connected(a, "http_stream")
    assert await post(b.http, b.url, stream, {"id": 2, "subscribe": {"channel": "news"}}) == 204
    assert (await stream.reply(2))["subscribe"]["recoverable"] is True
    await b.publish("news", {"n": 1})
    assert (await stream.message(timeout=5))["push"]["pub"]["data"] == {"n": 1}
    # A pong posted to the other node counts, as one posted here would.
    assert await post(b.http, b.url, stream, {}) == 204

    # An id no worker has: the broker returns the message, the answer is 404.
    stream.node = "tidings-1.000000000000"
    assert await post(b.http, b.url, stream, {"id": 3, "ping": {}}) == 404
    # A node that stopped: its queue is gone with it, and so is its id.
    stream.node = a.app[EMULATION].worker
    await a.stop()
    assert await post(b.http, b.url, stream, {"id": 4, "ping": {}}) == 404


async def test_a_relay_without_its_broker_answers_503(
    amqp: dict[str, Any], serve: ServerFactory
) -> None:
    a, b = await serve(amqp), await serve(amqp)
    stream, _ = await connected(a, "http_stream")
    control = b.node.control
    assert control is not None and b.app[EMULATION].relay is control
    await control.close()
    assert await post(b.http, b.url, stream, {"id": 2, "ping": {}}) == 503


async def test_posts_spread_over_two_workers_all_reach_the_session(tmp_path: Path) -> None:
    exchange, stream_name = unique("test.events"), unique("test.log")
    args = ["--amqp-url", AMQP_URL, "--exchange", exchange, "--stream", stream_name]
    try:
        with nodes(tmp_path, 1, *args, "--workers", "2") as (node,):
            token = mint_token(SECRET, "alice")
            frame = orjson.dumps({"id": 1, "connect": {"token": token}})
            async with aiohttp.ClientSession() as http:
                response = await http.post(f"{node.url}/connection/http_stream", data=frame)
                line = await asyncio.wait_for(response.content.readline(), 5 * TIME_SCALE)
                result = orjson.loads(line)["connect"]
                # Each post on a new TCP connection: the kernel spreads them over both
                # workers (all 20 on the stream's worker: a chance of 2**-20).
                statuses = []
                for i in range(20):
                    async with aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(force_close=True)
                    ) as fresh:
                        body = {
                            "node": result["node"],
                            "session": result["session"],
                            "data": orjson.dumps({"id": 2 + i, "subscribe": {"channel": f"c{i}"}})
                            .decode(),
                        }
                        async with fresh.post(f"{node.url}/emulation", json=body) as r:
                            statuses.append(r.status)
                assert statuses == [204] * 20
                replied: set[int] = set()
                while len(replied) < 20:
                    line = await asyncio.wait_for(response.content.readline(), 5 * TIME_SCALE)
                    message = orjson.loads(line)
                    if message != {}:
                        assert "subscribe" in message, message
                        replied.add(message["id"])
                assert replied == set(range(2, 22))
                response.close()
    finally:
        delete_amqp([exchange], [stream_name])

