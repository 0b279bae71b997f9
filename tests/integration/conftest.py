"""Fixtures of the socket-level tests: live nodes on ephemeral ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.integration.live import LiveServer, make_settings, scaled, start_server, token

if TYPE_CHECKING:
    from centrifuge import Client

ServerFactory = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def serve(http: aiohttp.ClientSession, tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Starts nodes on ephemeral ports: ``await serve({"client.ping_interval": 1})``.

    ``api_key=None`` starts one without the server API. Every node is stopped with the
    real shutdown sequence after the test.
    """
    servers: list[LiveServer] = []

    async def factory(
        overrides: dict[str, Any] | None = None, *, toml: str | None = None, **kwargs: Any
    ) -> LiveServer:
        settings = make_settings(overrides, toml=toml, tmp_path=tmp_path, **kwargs)
        server = await start_server(settings, http)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(serve: ServerFactory) -> LiveServer:
    """A node with default settings, the server API on."""
    return await serve()


#: ``await sdk(server, "alice")``: a connected ``centrifuge-python`` client.
Connect = Callable[..., Awaitable["Client"]]


@pytest.fixture
async def sdk() -> AsyncIterator[Connect]:
    """Connects ``centrifuge-python`` clients with a token of ``user`` (tests that use it
    skip when the package is missing); they are disconnected after the test."""
    from centrifuge import Client

    clients: list[Client] = []

    async def connect(server: LiveServer, user: str = "alice") -> Client:
        client = Client(
            f"ws://127.0.0.1:{server.port}/connection/websocket",
            token=token(user),
            timeout=scaled(5),
            proxy=None,
        )
        clients.append(client)
        await client.connect()
        await client.ready(timeout=scaled(5))
        return client

    yield connect
    for client in clients:
        await client.disconnect()
