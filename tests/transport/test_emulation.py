"""This worker's emulated sessions and the routing of posted commands (no sockets)."""

from __future__ import annotations

import pytest

from tidings.protocol.emulation import EmulationRequest
from tidings.transport.emulation import Emulation, UnknownWorker, new_worker_id


class Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def receive(self, data: bytes) -> None:
        self.frames.append(data)


class FakeRelay:
    def __init__(self) -> None:
        self.forwarded: list[EmulationRequest] = []

    async def forward(self, request: EmulationRequest) -> None:
        self.forwarded.append(request)


def test_worker_ids_are_new_at_every_start() -> None:
    first, second = new_worker_id("tidings-1"), new_worker_id("tidings-1")
    assert first != second and first.startswith("tidings-1.")


def test_session_ids_are_unguessable_and_route_to_their_connection() -> None:
    emulation = Emulation("w1")
    a, b = Recorder(), Recorder()
    ids_a, ids_b = emulation.register(a), emulation.register(b)
    assert ids_a.node == ids_b.node == "w1"
    assert ids_a.session != ids_b.session and len(ids_a.session) == 32  # 24 random bytes
    assert emulation.deliver(ids_b.session, b"x")
    assert (a.frames, b.frames) == ([], [b"x"])
    emulation.unregister(ids_b.session)
    assert not emulation.deliver(ids_b.session, b"y")
    assert len(emulation) == 1


async def test_route_delivers_here_or_forwards_to_the_named_worker() -> None:
    emulation = Emulation("w1")
    conn = Recorder()
    ids = emulation.register(conn)
    await emulation.route(EmulationRequest("w1", ids.session, b"here"))
    await emulation.route(EmulationRequest("w1", "gone", b"dropped"))  # ended: no error
    assert conn.frames == [b"here"]
    with pytest.raises(UnknownWorker):  # one process, no relay: no other worker exists
        await emulation.route(EmulationRequest("w2", ids.session, b"there"))
    relay = FakeRelay()
    emulation.relay = relay
    await emulation.route(EmulationRequest("w2", "s", b"there"))
    assert relay.forwarded == [EmulationRequest("w2", "s", b"there")]
    assert conn.frames == [b"here"]
