"""Server API commands across two nodes sharing one RabbitMQ: a command sent to one node
acts on connections of the other, and history is the same on both."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.harness import API_KEY, TIME_SCALE, Client, delete_amqp, nodes, unique

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]

CONFIG = """
[[namespaces]]
name = "feed"
"""


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    exchange, stream = unique("test.events"), unique("test.log")
    yield exchange, stream
    delete_amqp([exchange], [stream])


def api(url: str, method: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{url}/api/{method}", data=json.dumps(body).encode(), headers={"X-API-Key": API_KEY}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        answer = json.loads(r.read())
    assert "result" in answer, answer
    return answer["result"]


async def eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout * TIME_SCALE
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_commands_and_history_across_nodes(tmp_path: Path, names: tuple[str, str]) -> None:
    exchange, stream = names
    args = ["--amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "--exchange", exchange]
    args += ["--stream", stream, "--workers", "1"]
    with nodes(tmp_path, 2, *args, config=CONFIG) as (one, two):
        alice = Client(two.ws_url, "alice", ["feed:a"])
        await alice.start()
        for n in range(3):
            await asyncio.to_thread(api, one.url, "publish", {"channel": "feed:a", "data": n})
        await alice.wait_for(3)
        assert [p[2] for p in alice.pubs] == [0, 1, 2]

        # History read on the other node than the one that published.
        page = await asyncio.to_thread(api, two.url, "history", {"channel": "feed:a", "limit": -1})
        assert [p["data"] for p in page["publications"]] == [0, 1, 2]

        # history_remove sent to node one empties node two's copy too.
        await asyncio.to_thread(api, one.url, "history_remove", {"channel": "feed:a"})

        def removed_on_two() -> bool:
            body = {"channel": "feed:a", "limit": -1}
            return api(two.url, "history", body)["publications"] == []

        await eventually(removed_on_two)

        # disconnect sent to node one closes alice's connection on node two.
        await asyncio.to_thread(api, one.url, "disconnect", {"user": "alice"})
        await eventually(lambda: alice.close_code is not None)
        assert alice.close_code == 3503
        await alice.stop()
