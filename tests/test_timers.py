"""The node-wide timer queue."""

from __future__ import annotations

import asyncio

from tests.integration.live import scaled
from tidings.timers import TimerQueue

INF = float("inf")


class Item:
    """Records its calls and returns the deadlines it is given, one per call."""

    def __init__(self, *nexts: float) -> None:
        self.calls: list[float] = []
        self.nexts = list(nexts)

    def on_timer(self, now: float) -> float:
        self.calls.append(now)
        return self.nexts.pop(0) if self.nexts else INF


def test_run_due_in_deadline_order() -> None:
    q = TimerQueue(clock=lambda: 0.0)
    order: list[str] = []

    class Named(Item):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def on_timer(self, now: float) -> float:
            order.append(self.name)
            return INF

    a, b, c = Named("a"), Named("b"), Named("c")
    q.schedule(c, 3.0)
    q.schedule(a, 1.0)
    q.schedule(b, 2.0)
    assert len(q) == 3
    q.run_due(2.5)
    assert order == ["a", "b"] and len(q) == 1
    q.run_due(10.0)
    assert order == ["a", "b", "c"] and len(q) == 0


def test_not_due_is_not_run() -> None:
    q = TimerQueue()
    item = Item()
    q.schedule(item, 5.0)
    q.run_due(4.999)
    assert item.calls == []
    q.run_due(5.0)
    assert item.calls == [5.0]


def test_reschedule_replaces_the_earlier_deadline() -> None:
    q = TimerQueue()
    item = Item()
    q.schedule(item, 1.0)
    q.schedule(item, 5.0)
    q.run_due(2.0)
    assert item.calls == []
    q.run_due(5.0)
    assert item.calls == [5.0]
    assert len(q) == 0


def test_schedule_same_deadline_twice_is_one_entry() -> None:
    q = TimerQueue()
    item = Item()
    q.schedule(item, 1.0)
    q.schedule(item, 1.0)
    assert len(q._heap) == 1


def test_earlier_reschedule() -> None:
    q = TimerQueue()
    item = Item()
    q.schedule(item, 5.0)
    q.schedule(item, 1.0)
    q.run_due(1.0)
    assert item.calls == [1.0]
    q.run_due(5.0)
    assert item.calls == [1.0]


def test_cancel_and_inf() -> None:
    q = TimerQueue()
    a, b = Item(), Item()
    q.schedule(a, 1.0)
    q.schedule(b, 1.0)
    q.cancel(a)
    q.schedule(b, INF)
    assert len(q) == 0
    q.run_due(2.0)
    assert a.calls == [] and b.calls == []
    q.cancel(a)  # cancelling twice is harmless


def test_the_returned_deadline_is_scheduled() -> None:
    q = TimerQueue()
    item = Item(3.0, 7.0)
    q.schedule(item, 1.0)
    q.run_due(1.0)
    assert len(q) == 1
    q.run_due(3.0)
    q.run_due(10.0)
    assert item.calls == [1.0, 3.0, 10.0]
    assert len(q) == 0


def test_a_deadline_already_passed_runs_in_the_same_pass() -> None:
    q = TimerQueue()
    item = Item(2.0)
    q.schedule(item, 1.0)
    q.run_due(5.0)
    assert item.calls == [5.0, 5.0]


async def test_serving_task_runs_due_items() -> None:
    loop = asyncio.get_running_loop()
    q = TimerQueue(clock=loop.time, resolution=0.001)
    fired = asyncio.Event()

    class Waker:
        def on_timer(self, now: float) -> float:
            fired.set()
            return INF

    q.start()
    try:
        q.schedule(Waker(), loop.time() + 0.01)
        await asyncio.wait_for(fired.wait(), scaled(2.0))
    finally:
        await q.stop()
    assert q._task is None
    await q.stop()  # stopping twice is harmless


async def test_an_earlier_deadline_wakes_the_task() -> None:
    loop = asyncio.get_running_loop()
    q = TimerQueue(clock=loop.time, resolution=0.001)
    fired = asyncio.Event()

    class Waker:
        def on_timer(self, now: float) -> float:
            fired.set()
            return INF

    q.start()
    try:
        q.schedule(Item(), loop.time() + 3600)
        await asyncio.sleep(0.01)  # the task now sleeps towards the far deadline
        q.schedule(Waker(), loop.time() + 0.01)
        await asyncio.wait_for(fired.wait(), scaled(2.0))
    finally:
        await q.stop()
