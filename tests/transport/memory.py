"""In-memory twins of a connection's surroundings: a socket transport and a writer host.

:class:`MemoryTransport` stands in for the asyncio transport of an accepted socket: it
keeps what is written, as the separate ``write`` calls they were, and reports whatever
unsent backlog a test sets. :class:`WriterTwin` is a node as a connection sees it (the
writer's host and the session's), with a flusher that runs only when the test says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.fakes import FakeHost
from tidings.config import Settings
from tidings.flusher import Flusher
from tidings.metrics import Metrics
from tidings.node import Closable
from tidings.timers import TimerQueue

__all__ = ["MemoryTransport", "WriterTwin", "server_frames"]


class MemoryTransport(asyncio.Transport):
    """A transport that writes to a list; ``unsent`` is what the kernel would still hold."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.unsent = 0
        #: Whether writes stay unsent (add to ``unsent``) until a test drains them.
        self.holds = False
        self.closed = False
        self.aborted = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        # Kept as given, so a test can tell a shared frame object from an equal copy.
        self.writes.append(data if isinstance(data, bytes) else bytes(data))
        if self.holds:
            self.unsent += len(data)

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True
        self.aborted = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def is_reading(self) -> bool:
        return not self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class WriterTwin(FakeHost):
    """A node as its connections see it, with no log, no sockets and a manual flusher.

    ``flusher.flush()`` (or :meth:`end_turn`) is the end of a loop turn; nothing is written
    for pushes before it.
    """

    def __init__(self, config: Settings | None = None, *, monotonic: float = 1000.0) -> None:
        super().__init__(config)
        self.turns: list[Callable[[], None]] = []
        # The twin is the flusher's loop, and no flush takes any time on its clock.
        self.flusher = Flusher(self, clock=lambda: 0.0, work_clock=lambda: 0.0)
        self.mono = monotonic
        self.timers = TimerQueue(lambda: self.mono)
        self.metrics = Metrics()
        self.live: set[Closable] = set()

    def clock(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def join(self, conn: Closable) -> None:
        self.live.add(conn)

    def leave(self, conn: Closable) -> None:
        self.live.discard(conn)

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.turns.append(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.turns.append(callback)

    def end_turn(self) -> None:
        """Runs the flushes the connections asked for, as the loop would after a turn."""
        turns, self.turns = self.turns, []
        for callback in turns:
            callback()


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each unmasked, final frame in ``data``, as a server sends them."""
    frames: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        first, second = data[i], data[i + 1]
        assert first & 0x80 and not second & 0x80, "a final, unmasked frame"
        n, i = second & 0x7F, i + 2
        if n == 126:
            n, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif n == 127:
            n, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        frames.append((first & 0x0F, data[i : i + n]))
        i += n
    return frames
