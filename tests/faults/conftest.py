"""Markers and fixtures of the fault suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.system.harness import delete_amqp, unique


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: bounded churn run; long with TIDINGS_SOAK_SECONDS")
    config.addinivalue_line("markers", "chaos: breaks a real process or the broker on purpose")


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A fresh exchange and stream, deleted afterwards."""
    exchange, stream = unique("faults.events"), unique("faults.log")
    yield exchange, stream
    delete_amqp([exchange], [stream])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """One client session for many WebSockets (no per-host connection cap)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session
