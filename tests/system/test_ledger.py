"""The ledger between two nodes built as ``tidings serve`` builds them (``create_app``),
with RabbitMQ: each sees the other's writes, and a node's readiness includes its ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.system.harness import AMQP_URL, SECRET, TIME_SCALE, delete_amqp, unique
from tidings.appkeys import NODE
from tidings.config import load_settings
from tidings.log.ledger import RabbitMqLedger
from tidings.node import Node
from tidings.server import create_app

pytestmark = [pytest.mark.rabbitmq, pytest.mark.integration]


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    exchange, stream = unique("test.events"), unique("test.log")
    yield exchange, stream
    delete_amqp([exchange], [stream])  # and its ledger stream


def node(exchange: str, stream: str, name: str) -> Node:
    env = {
        "TIDINGS_AUTH_HMAC_SECRET": SECRET,
        "TIDINGS_AMQP_URL": AMQP_URL,
        "TIDINGS_AMQP_EXCHANGE": exchange,
        "TIDINGS_AMQP_STREAM": stream,
        "TIDINGS_LEDGER_MAX_BYTES": "1MiB",
    }
    return create_app(load_settings(None, env), name=name)[NODE]


async def test_two_nodes_see_each_others_ledger_writes(names: tuple[str, str]) -> None:
    a, b = node(*names, "a"), node(*names, "b")
    assert isinstance(a.ledger, RabbitMqLedger)
    assert a.ledger.stream == f"{names[1]}.state"
    await a.start()
    await b.start()
    try:
        assert a.ready and b.ready
        # A kind of this test's own: the node's features merge theirs ("read" for receipts).
        await a.ledger.put("test", "alice", b"from a")
        await b.ledger.put("test", "bob", b"from b")
        deadline = time.monotonic() + 10 * TIME_SCALE
        while b.ledger.get("test", "alice") is None or a.ledger.get("test", "bob") is None:
            assert time.monotonic() < deadline, "the writes did not cross"
            await asyncio.sleep(0.01)
        assert a.ledger.snapshot() == b.ledger.snapshot()
        await a.ledger.close()  # a node whose ledger stopped is not ready
        assert not a.ready and b.ready
    finally:
        await a.stop()
        await b.stop()
