"""The README's receipt consumer ("Back to your application", read receipts), run as it
is written there against a live ``tidings serve`` node on the real RabbitMQ: five notes to
alice, three marked seen, and after ``WITHIN`` the mailer is handed the other two, once
each. Only the names (broker, stream, exchange, queue), ``WITHIN`` and the mailer are
the test's; a change to the README that breaks the consumer breaks this test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pika
import pytest

from tests.system.harness import (
    AMQP_URL,
    API_KEY,
    SECRET,
    TIME_SCALE,
    Node,
    delete_amqp,
    start_node,
    unique,
)
from tidings.auth import mint_token

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]

README = Path(__file__).resolve().parents[2] / "README.md"
INBOX = "notes:inbox#alice"
WITHIN = 1.5


def consumer_source() -> str:
    """The README's code block that names this test, without its last line (the
    ``asyncio.run`` that a script ends with)."""
    text = README.read_text()
    at = text.index("tests/system/test_readme_consumer.py")
    block = re.search(r"```python\n(.*?)```", text[at:], re.S)
    assert block is not None
    lines = block.group(1).rstrip("\n").split("\n")
    assert lines[-1] == "asyncio.run(main())"
    return "\n".join(lines[:-1])


class Names:
    def __init__(self) -> None:
        self.exchange, self.stream = unique("test.events"), unique("test.log")
        self.events, self.queue = unique("test.app-events"), unique("test.receipts")


@pytest.fixture
def names() -> Iterator[Names]:
    n = Names()
    yield n
    delete_amqp([n.exchange, n.exchange + ".control", n.events], [n.stream, n.queue])


@pytest.fixture
def node(tmp_path: Path, names: Names) -> Iterator[Node]:
    args = ["--amqp-url", AMQP_URL, "--exchange", names.exchange, "--stream", names.stream]
    env = {"TIDINGS_AMQP_EVENTS_EXCHANGE": names.events}
    config = '[[namespaces]]\nname = "notes"\n'
    started = start_node(tmp_path, *args, "--workers", "1", config=config, env=env)
    yield started
    started.stop()


def queue_has_consumer(name: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        declared = connection.channel().queue_declare(name, passive=True)
        return bool(declared.method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        connection.close()


async def post(http: aiohttp.ClientSession, url: str, body: object, **headers: str) -> Any:
    headers = {"Content-Type": "application/json", **headers}
    async with http.post(url, data=orjson.dumps(body), headers=headers) as r:
        answer = await r.json()
        assert r.status == 200, answer
        return answer["result"]


async def test_the_readme_consumer_emails_what_was_not_read(node: Node, names: Names) -> None:
    mailed: list[tuple[str, str, str, float]] = []
    consumer: dict[str, Any] = {}
    exec(compile(consumer_source(), str(README), "exec"), consumer)
    consumer.update(
        AMQP=AMQP_URL, LOG=names.stream, EVENTS=names.events, QUEUE=names.queue, WITHIN=WITHIN
    )
    consumer["send_email"] = lambda *mail: mailed.append((*mail, time.monotonic()))
    task = asyncio.create_task(consumer["main"]())
    try:
        deadline = time.monotonic() + 10 * TIME_SCALE
        while not queue_has_consumer(names.queue):
            assert time.monotonic() < deadline and not task.done(), "the consumer did not start"
            await asyncio.sleep(0.1)

        api = {"X-API-Key": API_KEY}
        bearer = {"Authorization": f"Bearer {mint_token(SECRET, 'alice', ttl=600)}"}
        async with aiohttp.ClientSession() as http:
            published_at = time.monotonic()
            for i in range(5):
                note = {"channel": INBOX, "data": {"n": i}}
                await post(http, f"{node.url}/api/publish", note, **api)
            history = {"channel": INBOX, "limit": -1}
            deadline = time.monotonic() + 10 * TIME_SCALE
            offsets: list[int] = []
            while len(offsets) < 5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
                page = await post(http, f"{node.url}/api/history", history, **api)
                offsets = [p["offset"] for p in page["publications"]]
            # Two in one mark, the third with another: two receipts.
            mark = {"channel": INBOX, "offsets": [offsets[0], offsets[2]]}
            assert (await post(http, f"{node.url}/events/read", mark, **bearer))["unread"] == 3
            mark = {"channel": INBOX, "upto": offsets[1]}
            assert (await post(http, f"{node.url}/events/read", mark, **bearer))["unread"] == 2

        deadline = time.monotonic() + (WITHIN + 10) * TIME_SCALE
        while len(mailed) < 2:
            assert time.monotonic() < deadline and not task.done(), mailed
            await asyncio.sleep(0.05)
        await asyncio.sleep(WITHIN)  # nothing more comes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert [(user, channel) for user, channel, _, _ in mailed] == [("alice", INBOX)] * 2
    assert sorted(orjson.loads(body)["n"] for _, _, body, _ in mailed) == [3, 4]
    assert all(at - published_at >= WITHIN for *_, at in mailed)
    assert consumer["notes"] == {}
