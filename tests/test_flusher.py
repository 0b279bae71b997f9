"""The writers' scheduler: each dirty connection written once per flush, and flushes spaced
by what the last one cost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tidings.flusher import Flusher


class Loop:
    """Records what the flusher schedules; ``now`` is the clock it reads (wall and CPU)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.soon: list[Callable[[], None]] = []
        self.later: list[tuple[float, Callable[[], None]]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.soon.append(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.later.append((delay, callback))

    def clock(self) -> float:
        return self.now


class Conn:
    """Logs its flushes; each takes ``cost`` seconds of the loop's clock."""

    def __init__(self, name: str, log: list[str], loop: Loop | None = None, cost: float = 0.0):
        self.name = name
        self.log = log
        self.loop = loop
        self.cost = cost

    def flush(self) -> None:
        self.log.append(self.name)
        if self.loop is not None:
            self.loop.now += self.cost


def flusher(pace: float = 1.0, max_wait: float = 0.05) -> tuple[Flusher, Loop]:
    loop = Loop()
    clocks = {"clock": loop.clock, "work_clock": loop.clock}
    return Flusher(loop, **clocks, pace=pace, max_wait=max_wait), loop


def test_one_flush_is_scheduled_per_turn_and_writes_in_marking_order() -> None:
    f, loop = flusher()
    log: list[str] = []
    a, b = Conn("a", log), Conn("b", log)
    f.mark_dirty(b)
    f.mark_dirty(a)
    assert len(loop.soon) == 1 and f.pending == 2
    loop.soon.pop()()
    assert log == ["b", "a"] and f.pending == 0
    f.mark_dirty(a)
    assert len(loop.soon) == 1


def test_a_connection_marked_during_a_flush_waits_for_the_next_one() -> None:
    f, loop = flusher()
    log: list[str] = []
    late = Conn("late", log)

    class Marks(Conn):
        def flush(self) -> None:
            super().flush()
            f.mark_dirty(late)

    f.mark_dirty(Marks("first", log))
    loop.soon.pop()()
    assert log == ["first"] and f.pending == 1 and len(loop.soon) == 1
    loop.soon.pop()()
    assert log == ["first", "late"]


def test_the_next_flush_waits_as_long_as_the_last_one_cost() -> None:
    f, loop = flusher(pace=1.0)
    log: list[str] = []
    f.mark_dirty(Conn("a", log, loop, 0.004))
    f.mark_dirty(Conn("b", log, loop, 0.004))
    loop.soon.pop()()  # took 8 ms, ended at 100.008
    loop.now += 0.001
    f.mark_dirty(Conn("c", log))
    assert loop.soon == []
    ((delay, callback),) = loop.later
    assert abs(delay - 0.007) < 1e-9
    # Whatever else turns dirty meanwhile rides on the same flush.
    f.mark_dirty(Conn("d", log))
    assert len(loop.later) == 1
    callback()
    assert log == ["a", "b", "c", "d"]


def test_an_event_after_the_spacing_is_written_at_once() -> None:
    f, loop = flusher(pace=1.0)
    log: list[str] = []
    f.mark_dirty(Conn("a", log, loop, 0.004))
    loop.soon.pop()()
    loop.now += 0.1
    f.mark_dirty(Conn("b", log))
    assert len(loop.soon) == 1 and loop.later == []


def test_the_spacing_is_capped_and_can_be_turned_off() -> None:
    f, loop = flusher(pace=1.0, max_wait=0.01)
    log: list[str] = []
    f.mark_dirty(Conn("a", log, loop, 0.5))
    loop.soon.pop()()
    f.mark_dirty(Conn("b", log))
    assert [round(d, 9) for d, _ in loop.later] == [0.01]
    f, loop = flusher(pace=0.0)
    f.mark_dirty(Conn("a", log, loop, 0.5))
    loop.soon.pop()()
    f.mark_dirty(Conn("b", log))
    assert len(loop.soon) == 1 and loop.later == []


async def test_the_running_loop_runs_the_flush_after_the_current_callbacks() -> None:
    f = Flusher()
    log: list[str] = []
    f.mark_dirty(Conn("a", log))
    assert log == []
    await asyncio.sleep(0)
    assert log == ["a"]


def test_the_spacing_follows_the_flushs_cpu_time_not_its_wall_time() -> None:
    loop = Loop()
    cpu = [0.0]
    f = Flusher(loop, clock=loop.clock, work_clock=lambda: cpu[0], pace=1.0)
    log: list[str] = []

    class Descheduled(Conn):
        def flush(self) -> None:
            super().flush()
            cpu[0] += 0.002  # 2 ms of work, while the host kept us off the CPU for 40 ms
            loop.now += 0.040

    f.mark_dirty(Descheduled("a", log))
    loop.soon.pop()()
    f.mark_dirty(Conn("b", log))
    assert [round(d, 9) for d, _ in loop.later] == [0.002]
