"""The writers' scheduler: one flush per loop turn, each dirty connection written once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tidings.flusher import Flusher


class Conn:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def flush(self) -> None:
        self.log.append(self.name)


def test_one_flush_is_scheduled_per_turn_and_writes_in_marking_order() -> None:
    turns: list[Callable[[], None]] = []
    flusher = Flusher(call_soon=turns.append)
    log: list[str] = []
    a, b = Conn("a", log), Conn("b", log)
    flusher.mark_dirty(b)
    flusher.mark_dirty(a)
    assert len(turns) == 1 and flusher.pending == 2
    turns.pop()()
    assert log == ["b", "a"] and flusher.pending == 0
    flusher.mark_dirty(a)
    assert len(turns) == 1


def test_a_connection_marked_during_a_flush_waits_for_the_next_turn() -> None:
    turns: list[Callable[[], None]] = []
    flusher = Flusher(call_soon=turns.append)
    log: list[str] = []
    late = Conn("late", log)

    class Marks(Conn):
        def flush(self) -> None:
            super().flush()
            flusher.mark_dirty(late)

    flusher.mark_dirty(Marks("first", log))
    turns.pop()()
    assert log == ["first"] and flusher.pending == 1 and len(turns) == 1
    turns.pop()()
    assert log == ["first", "late"]


async def test_the_running_loop_runs_the_flush_after_the_current_callbacks() -> None:
    flusher = Flusher()
    log: list[str] = []
    flusher.mark_dirty(Conn("a", log))
    assert log == []
    await asyncio.sleep(0)
    assert log == ["a"]
