"""Web Push across two ``tidings serve`` nodes on the real RabbitMQ: a subscription
registered on one node is in the other's ledger, and a publication to an offline user is
sent by exactly one worker, whichever node the publication entered by; a user connected
to the other node is not pushed at all; a subscription its push service says is gone
(410) leaves both nodes' ledgers.

The push service is the tests' own on 127.0.0.1 (``allow_private_endpoints``), which
decrypts each message with its subscription's key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import orjson
import pika
import pytest

from tests.system.harness import (
    AMQP_URL,
    API_KEY,
    SECRET,
    TIME_SCALE,
    Client,
    Node,
    delete_amqp,
    metrics_of,
    nodes,
    unique,
)
from tests.webpush.pushservice import SUBJECT, Browser, PushService, check_vapid, node_toml
from tidings.auth import mint_token
from tidings.webpush.vapid import generate_key

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]

PRIVATE, PUBLIC = generate_key()
HEARTBEAT, TTL = 0.5, 1.5
#: Both nodes up for the TTL (settled: they share the sending) and heard from again.
SETTLE = TTL + 3 * HEARTBEAT
CONFIG = node_toml(PRIVATE)


class Names:
    def __init__(self) -> None:
        self.exchange, self.stream = unique("test.events"), unique("test.log")
        #: Named here so that the cleanup deletes the very stream the ledger writes to.
        self.ledger = unique("test.push-ledger")


def queue_exists(name: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        connection.close()


@pytest.fixture
def names() -> Iterator[Names]:
    n = Names()
    yield n
    delete_amqp([n.exchange, n.exchange + ".control"], [n.stream, n.ledger])
    assert not queue_exists(n.ledger)


@pytest.fixture
def cluster(tmp_path: Path, names: Names) -> Iterator[list[Node]]:
    args = ["--amqp-url", AMQP_URL, "--exchange", names.exchange, "--stream", names.stream]
    env = {
        "TIDINGS_CLUSTER_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        "TIDINGS_CLUSTER_PRESENCE_TTL": str(TTL),
        "TIDINGS_LEDGER_STREAM": names.ledger,
        "TIDINGS_LEDGER_MAX_BYTES": "1MiB",
    }
    with nodes(tmp_path, 2, *args, "--workers", "1", config=CONFIG, env=env) as started:
        yield started


@pytest.fixture
async def push() -> AsyncIterator[PushService]:
    service = await PushService().start()
    yield service
    await service.stop()


async def post(http: aiohttp.ClientSession, url: str, body: object, **headers: str) -> object:
    headers = {"Content-Type": "application/json", **headers}
    async with http.post(url, data=orjson.dumps(body), headers=headers) as r:
        answer = await r.json()
        assert r.status == 200, answer
        return answer


def sent(node: Node) -> float:
    return metrics_of(node).get(("tidings_web_push_total", (("result", "sent"),)), 0.0)


def subscriptions(node: Node) -> float:
    return metrics_of(node).get(("tidings_ledger_entries", (("kind", "push"),)), 0.0)


async def test_exactly_one_push_per_offline_user_across_two_nodes(
    cluster: list[Node], names: Names, push: PushService
) -> None:
    a, b = cluster
    assert queue_exists(names.ledger)  # the ledger's stream, as the cleanup deletes it
    users = [f"user{i}" for i in range(16)]
    browsers = {user: Browser() for user in users}
    async with aiohttp.ClientSession() as http:
        for user in users:  # every page registers on node A
            token = mint_token(SECRET, user, ttl=600)
            subscription = browsers[user].subscription(push.endpoint(user))
            answer = await post(
                http, f"{a.url}/push/subscribe", subscription, Authorization=f"Bearer {token}"
            )
            assert answer == {"result": {}}
        # One user has a tab open on node B: no node may push to them.
        online = Client(b.ws_url, "user0")
        await online.start()
        await asyncio.sleep(SETTLE * TIME_SCALE)  # both settled, the tab announced

        try:
            for i, user in enumerate(users):  # half the publications enter through each node
                via = (a, b)[i % 2]
                await post(
                    http,
                    f"{via.url}/api/publish",
                    {"channel": f"user#{user}", "data": {"n": i}},
                    **{"X-API-Key": API_KEY},
                )
            deadline = time.monotonic() + 10 * TIME_SCALE
            while len(push.received) < len(users) - 1:
                assert time.monotonic() < deadline, f"{len(push.received)} pushes arrived"
                await asyncio.sleep(0.02)
            # Time for a second sender, if there were one, to have sent too.
            await asyncio.sleep(2 * HEARTBEAT * TIME_SCALE)
        finally:
            await online.stop()

    assert push.at("user0") == []
    for i, user in enumerate(users[1:], start=1):
        (request,) = push.at(user)  # exactly one request per offline user
        check_vapid(request, push.origin, PUBLIC, SUBJECT)
        message = orjson.loads(browsers[user].decrypt(request.body))
        assert (message["channel"], message["data"]) == (f"user#{user}", {"n": i})
    # Both workers sent some (rendezvous hashing spreads the users), none twice.
    counts = [sent(a), sent(b)]
    assert sum(counts) == len(users) - 1 and all(counts), counts
    assert subscriptions(a) == subscriptions(b) == len(users)

    # A push service that says 410 makes the sender drop the subscription: from the
    # ledger of both nodes.
    push.script("user1", 410)
    async with aiohttp.ClientSession() as http:
        body = {"channel": "user#user1", "data": {"n": "gone"}}
        await post(http, f"{b.url}/api/publish", body, **{"X-API-Key": API_KEY})
    deadline = time.monotonic() + 10 * TIME_SCALE
    while not subscriptions(a) == subscriptions(b) == len(users) - 1:
        assert time.monotonic() < deadline, (subscriptions(a), subscriptions(b))
        await asyncio.sleep(0.05)
    assert len(push.at("user1")) == 2
