"""Fixtures of the log tests that talk to the real RabbitMQ (see ``live.py``)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from tests.log.live import HOST, PORT, STREAM_PORT, URL, Names, broker_up


@pytest.fixture(scope="session")
def rabbitmq() -> None:
    """The broker answers; else the test is skipped (failed under CI)."""
    if not broker_up():
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ is not reachable on {HOST}:{PORT}")
        pytest.skip(f"RabbitMQ is not reachable on {HOST}:{PORT} (make deps starts it)")


@pytest.fixture
def stream_protocol() -> None:
    """The rabbitmq_stream plugin answers (``make deps`` enables it)."""
    try:
        socket.create_connection((HOST, STREAM_PORT), 1).close()
    except OSError:
        message = f"RabbitMQ's stream protocol is not reachable on {HOST}:{STREAM_PORT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(f"{message} (make deps enables the rabbitmq_stream plugin)")


@pytest.fixture
async def names(rabbitmq: None) -> AsyncIterator[Names]:
    """A fresh exchange, stream and quarantine exchange, deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    n = Names(f"test.{suffix}", f"test.{suffix}.log", f"test.{suffix}.rejects")
    yield n
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        for queue in (n.stream, f"{n.stream}.epoch-lock"):
            await channel.queue_delete(queue)
        for exchange in (n.exchange, n.quarantine):
            await channel.exchange_delete(exchange)


@pytest.fixture
async def state_stream(rabbitmq: None) -> AsyncIterator[str]:
    """A fresh name for a ledger's stream, deleted afterwards."""
    name = f"test.{uuid.uuid4().hex[:10]}.state"
    yield name
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)
