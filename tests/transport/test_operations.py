"""The writer runs a session's operations: a task each, the outcome back to the session,
the reply written at once; a host that fails is an internal error; a close cancels them."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.protocol.test_wsframes import frame
from tests.transport.memory import MemoryTransport, WriterTwin, server_frames
from tidings.protocol.operations import Connected, Operation, Outcome, Peer
from tidings.protocol.wsframes import Opcode
from tidings.transport.websocket import WebSocketConnection


class BackendTwin(WriterTwin):
    """A writer host whose ``perform`` waits for the test to release it."""

    def __init__(self) -> None:
        super().__init__()
        self.proxied = {"connect"}
        self.calls: list[tuple[Operation, Peer]] = []
        self.go = asyncio.Event()
        self.outcome: Outcome | Exception = Connected("bob")
        self.cancelled = False

    async def perform(self, operation: Operation, peer: Peer) -> Outcome:
        self.calls.append((operation, peer))
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def start(twin: BackendTwin) -> tuple[WebSocketConnection, MemoryTransport]:
    transport = MemoryTransport()
    conn = WebSocketConnection(twin, transport, Peer("websocket", "10.1.1.1"))
    transport.set_protocol(conn)
    conn.start(b"", None)
    conn.data_received(frame(Opcode.TEXT, orjson.dumps({"id": 1, "connect": {}})))
    return conn, transport


def written(transport: MemoryTransport) -> list[Any]:
    return [orjson.loads(p) for _, p in server_frames(b"".join(transport.writes))]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_outcome_is_answered_at_once() -> None:
    twin = BackendTwin()
    conn, transport = start(twin)
    await settle()
    [(operation, peer)] = twin.calls
    assert peer.ip == "10.1.1.1" and transport.writes == []
    twin.go.set()
    await settle()
    [reply] = written(transport)
    assert reply["id"] == 1 and reply["connect"]["client"] == operation.client
    assert conn.session is not None and conn.session.user == "bob"
    conn.connection_lost(None)


async def test_a_host_that_raises_is_an_internal_error() -> None:
    twin = BackendTwin()
    twin.outcome = RuntimeError("bug")
    _, transport = start(twin)
    twin.go.set()
    await settle()
    [reply] = written(transport)
    assert reply["error"]["code"] == 100 and reply["error"]["temporary"] is True


async def test_a_closed_connection_cancels_its_calls() -> None:
    twin = BackendTwin()
    conn, transport = start(twin)
    await settle()
    conn.connection_lost(None)
    await settle()
    assert twin.cancelled and transport.writes == []
