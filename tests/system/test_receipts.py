"""Read receipts across two ``tidings serve`` nodes on the real RabbitMQ: five notes to
alice, three marked seen on node A (two with the SDK's ``rpc``, one by a page reading
``/events`` and posting ``/events/read`` with the offset of its event's id), then alice
reconnects on node B: ``tidings.unread`` and the server API both say 2, on both nodes,
and the application's events exchange got one ``receipt`` per mark, from node A only.
The read positions travel in the ledger's stream (``<stream>.state``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

pytest.importorskip("centrifuge", reason="needs centrifuge-python: run `make deps`")

from centrifuge import Client

from tests.log.live import EventTap
from tests.system.harness import (
    AMQP_URL,
    API_KEY,
    SECRET,
    TIME_SCALE,
    AppNames,
    Node,
    nodes,
)
from tidings.auth import mint_token

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]

INBOX = "notes:inbox#alice"
CONFIG = """
[[namespaces]]
name = "notes"
"""


@pytest.fixture
def cluster(tmp_path: Path, app_names: AppNames) -> Iterator[list[Node]]:
    args = ["--amqp-url", AMQP_URL, "--exchange", app_names.exchange, "--stream", app_names.stream]
    env = {"TIDINGS_AMQP_EVENTS_EXCHANGE": app_names.events}
    with nodes(tmp_path, 2, *args, "--workers", "1", config=CONFIG, env=env) as started:
        yield started


def token(user: str = "alice", channels: tuple[str, ...] = ()) -> str:
    return mint_token(SECRET, user, ttl=600, channels=channels)


async def sdk(node: Node) -> Client:
    client = Client(node.ws_url, token=token(), timeout=5 * TIME_SCALE, proxy=None)
    await client.connect()
    await client.ready(timeout=5 * TIME_SCALE)
    return client


async def api(http: aiohttp.ClientSession, node: Node, method: str, body: object) -> Any:
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    async with http.post(f"{node.url}/api/{method}", data=orjson.dumps(body), headers=headers) as r:
        answer = await r.json()
        assert r.status == 200 and "result" in answer, answer
        return answer["result"]


async def event_ids(response: aiohttp.ClientResponse, count: int) -> list[str]:
    """The ids of the next ``count`` publications of an event stream."""
    ids: list[str] = []
    event_id = ""
    async with asyncio.timeout(10 * TIME_SCALE):
        while len(ids) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:") and '"pub"' in line:
                ids.append(event_id)
    return ids


async def until_unread(client: Client, expected: int) -> dict[str, Any]:
    """``tidings.unread`` once it says ``expected`` (the other node's marks arrive
    through the ledger's stream)."""
    deadline = time.monotonic() + 10 * TIME_SCALE
    while True:
        data: dict[str, Any] = (await client.rpc("tidings.unread", {"channel": INBOX})).data
        if data["unread"] == expected or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.05)


async def test_three_of_five_seen_on_a_then_two_unread_on_b(
    cluster: list[Node], tap: EventTap
) -> None:
    a, b = cluster
    async with aiohttp.ClientSession() as http:
        # A page reading alice's event stream on node A.
        stream_token = token(channels=(INBOX,))
        async with http.get(f"{a.url}/events", params={"token": stream_token}) as page:
            assert page.status == 200
            for i in range(5):
                await api(http, (a, b)[i % 2], "publish", {"channel": INBOX, "data": {"n": i}})
            ids = await event_ids(page, 5)
        offsets = [int(i.rpartition(":")[2]) for i in ids]
        assert offsets == sorted(offsets) and len(set(offsets)) == 5

        alice = await sdk(a)
        reply = await alice.rpc("tidings.read", {"channel": INBOX, "offsets": offsets[:2]})
        assert reply.data["unread"] == 3
        await alice.disconnect()
        headers = {"Authorization": f"Bearer {stream_token}", "Content-Type": "application/json"}
        mark = orjson.dumps({"channel": INBOX, "offsets": [offsets[3]]})
        async with http.post(f"{a.url}/events/read", data=mark, headers=headers) as r:
            answer = await r.json()
            assert r.status == 200, answer
            assert answer["result"]["unread"] == 2

        again = await sdk(b)  # alice reconnects, on the other node
        try:
            unread = await until_unread(again, 2)
            # Not exact: the windows hold everything since each node started, and alice's
            # floor (0) is older, so a node cannot prove nothing came before it started.
            assert unread == {"unread": 2, "exact": False}
        finally:
            await again.disconnect()
        for node in (a, b):
            result = await api(http, node, "unread", {"user": "alice", "channel": INBOX})
            assert result == unread, node.url
        (a_worker, *_) = (await api(http, a, "info", {}))["nodes"]

    # One receipt per accepted mark, from the node that took it; none from node B.
    await tap.until("receipt", "alice", 2)
    await asyncio.sleep(1.0 * TIME_SCALE)
    first, second = tap.of("receipt", "alice")
    assert first["offsets"] == offsets[:2] and first["client"]
    assert second["offsets"] == [offsets[3]] and second["client"] == ""
    assert first["node"] == second["node"] == a_worker["uid"]
    assert {first["channel"], second["channel"]} == {INBOX}
    assert tap.keys.count("tidings.receipt") == 2
