"""The cells of each profile: which workload, how many connections, what publish rate.

``quick`` (a few minutes) proves the harness end to end; ``targets`` holds only the cells
:mod:`benchmarks.verdict` needs, around each target's knee; ``full`` maps every curve and
memory up to 100,000 connections. A profile is a list of :class:`Cell`; :data:`PROFILES`
names them for ``--profile``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DRAIN", "OVERLOAD", "PROFILES", "Cell", "is_slow"]

DRAIN = "personal-drain"
OVERLOAD = "overload"


@dataclass(frozen=True)
class Cell:
    """One measurement.

    Attributes:
        workload: ``broadcast`` (every connection on one channel), ``personal`` (one channel
            per user, each event to a random user), ``personal-drain`` (the same traffic,
            published while the server is paused, then drained) or ``idle`` (connect, then
            only memory).
        connections: connections to open (one user each in ``personal``).
        rate: events published per second (0 for ``idle``).
        duration_s: how long the publishers publish (idle: how long connections settle).
        targets: restricts the cell to these targets (empty: all).
        workers: tidings processes for this cell, whatever ``--tidings-workers`` says
            (0: as many as the connections need, at least ``--tidings-workers``).
        events: ``personal-drain`` only: events to publish (at ``rate`` for ``duration_s``).
        slow: ``overload`` only: how many of the connections stop reading once publishing
            starts (spread evenly over the users, see :func:`is_slow`).
    """

    workload: str
    connections: int
    rate: float = 0.0
    duration_s: float = 10.0
    targets: tuple[str, ...] = ()
    workers: int = 0
    events: int = 0
    slow: int = 0

    @property
    def traffic(self) -> str:
        """What the publishers send and the load generators expect: ``personal-drain`` is
        ``personal`` traffic, only timed differently; ``overload`` is ``broadcast`` traffic
        (with larger events) that some connections stop reading."""
        if self.workload == DRAIN:
            return "personal"
        if self.workload == OVERLOAD:
            return "broadcast"
        return self.workload

    @property
    def offered(self) -> float:
        """Deliveries per second the target is asked for (the x axis of the plot)."""
        if self.workload in ("broadcast", OVERLOAD):
            return self.connections * self.rate
        return self.rate

    @property
    def name(self) -> str:
        """Short label, e.g. ``broadcast-n1000-r50`` or ``personal-drain-n10000-e200000``."""
        if self.workload == DRAIN:
            return f"{self.workload}-n{self.connections}-e{self.events}"
        if self.workload == OVERLOAD:
            return f"{self.workload}-n{self.connections}-r{self.rate:g}-s{self.slow}"
        rate = f"-r{self.rate:g}" if self.workload != "idle" else ""
        return f"{self.workload}-n{self.connections}{rate}"


def _broadcast(
    n: int, rates: list[float], duration_s: float, targets: tuple[str, ...] = ()
) -> list[Cell]:
    return [Cell("broadcast", n, r, duration_s, targets) for r in rates]


def _personal(
    n: int, rates: list[float], duration_s: float, targets: tuple[str, ...] = ()
) -> list[Cell]:
    # One tidings worker: the personal goal is events/s per worker.
    return [Cell("personal", n, r, duration_s, targets, workers=1) for r in rates]


def _drain(n: int, events: int, rate: float = 30_000) -> Cell:
    # One worker, tidings only: the capacity goal is per worker, and pausing Web-STOMP would
    # pause the broker itself. 30,000/s is what the raw publishers offer without strain.
    return Cell(DRAIN, n, rate, events / rate, ("tidings",), workers=1, events=events)


def is_slow(user: int, connections: int, slow: int) -> bool:
    """Whether connection ``user`` (0-based) of an ``overload`` cell is one of its ``slow``
    ones: ``slow`` of the ``connections`` users, spread evenly (so every load generator
    holds its share)."""
    if slow <= 0 or connections <= 0:
        return False
    return (user * slow) // connections != ((user + 1) * slow) // connections


# overload: 200 connections on the broadcast channel, 100 events/s of ~2 KB (see
# cell.OVERLOAD_PAYLOAD_BYTES), 50 of them stop reading. One tidings worker, so that its
# /metrics (read at the end of the cell) are the whole server's.
_OVERLOAD = Cell(OVERLOAD, 200, 100, 15, workers=1, slow=50)

QUICK: list[Cell] = [
    # n1000-r10 is also the light-load cell of the verdict.
    *_broadcast(1000, [10, 50], 5),
    # Web-STOMP would spend ~50 s here, blocked by flow control (``full`` has it).
    *_broadcast(1000, [200], 5, ("baseline", "tidings")),
    *_personal(1000, [100, 1000], 5),
    Cell("idle", 2000, duration_s=2),
]

FULL: list[Cell] = [
    *_broadcast(1000, [5, 10, 20, 30, 50, 100, 150, 200, 300, 800], 15),
    *_broadcast(10_000, [1, 2, 5, 10, 20], 15),
    *_personal(10_000, [100, 500, 2000, 8000], 15),
    # Around tidings' per-worker goal (20,000/s); the others are far behind at 8,000/s.
    *_personal(10_000, [15_000, 20_000, 30_000], 15, targets=("tidings",)),
    # One worker's routing capacity with the broker out of the way (see cell.py).
    _drain(10_000, 200_000),
    Cell("idle", 1000, duration_s=5),
    Cell("idle", 10_000, duration_s=5),
    Cell("idle", 19_500, duration_s=5),
    # The most a RabbitMQ node with a 20,000-file limit accepts (see StompTarget.capacity).
    Cell("idle", 17_500, duration_s=5, targets=("stomp",)),
    Cell("idle", 100_000, duration_s=10, targets=("tidings",)),
    _OVERLOAD,
]

_B, _S, _T = ("baseline",), ("stomp",), ("tidings",)

# Each target's broadcast cells bracket its knee (its best cell with p99 <= 200 ms and nothing
# missing) on the hosts seen so far, whose speed differs 2-5x (benchmarks/hostspeed.py): the
# baseline's between 10 and 60 events/s per client (where its one thread reaches a core),
# Web-STOMP's between 10 and 40, tidings' between 50 and 800, where the load generators
# take a core and more. The verdict says when a target's highest cell still qualified.
# Cells far past a knee are left to ``full``: they only wait out their deadlines.
TARGETS: list[Cell] = [
    Cell("broadcast", 1000, 10, 15),  # every target: the light-load goal and a common point
    *_broadcast(1000, [5, 20, 30, 40, 50, 60, 80], 15, _B),
    *_broadcast(1000, [5, 15, 20, 30, 40], 15, _S),
    *_broadcast(1000, [50, 100, 200, 300, 400, 500, 600, 800], 15, _T),
    *_personal(10_000, [5000, 10_000, 20_000, 22_000, 30_000], 15, _T),
    _drain(10_000, 200_000),
    Cell("idle", 19_500, duration_s=5, targets=_T),
    Cell("idle", 100_000, duration_s=10, targets=_T),
    _OVERLOAD,  # every target: the overload goal compares tidings with the baseline
]

# One worker's broadcast knee (issue 13): 2,000 clients x 200 events/s beside the baseline,
# with the light-load cell of the verdict. ``--tidings-workers 2`` runs the same cells on two.
KNEE: list[Cell] = [
    Cell("broadcast", 1000, 10, 15, _B + _T),
    *_broadcast(2000, [100, 200], 15, _B + _T),
]

PROFILES: dict[str, list[Cell]] = {
    "quick": QUICK, "full": FULL, "targets": TARGETS, "knee": KNEE,
}
