"""The cells of each profile: which workload, how many connections, what publish rate.

``quick`` takes a couple of minutes for all three targets and proves the harness end to end.
``full`` maps each target's throughput and latency curve and its memory per idle connection up
to one process's limit (19,500) and, for tidings with several workers, 100,000 connections.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROFILES", "Cell"]


@dataclass(frozen=True)
class Cell:
    """One measurement.

    Attributes:
        workload: ``broadcast`` (every connection on one channel), ``personal`` (one channel
            per user, each event to a random user) or ``idle`` (connect, then only memory).
        connections: connections to open (one user each in ``personal``).
        rate: events published per second (0 for ``idle``).
        duration_s: how long the publishers publish (idle: how long connections settle).
        targets: restricts the cell to these targets (empty: all).
    """

    workload: str
    connections: int
    rate: float = 0.0
    duration_s: float = 10.0
    targets: tuple[str, ...] = ()

    @property
    def offered(self) -> float:
        """Deliveries per second the target is asked for (the x axis of the plot)."""
        if self.workload == "broadcast":
            return self.connections * self.rate
        return self.rate

    @property
    def name(self) -> str:
        """Short label, e.g. ``broadcast-n1000-r50``."""
        rate = f"-r{self.rate:g}" if self.workload != "idle" else ""
        return f"{self.workload}-n{self.connections}{rate}"


def _broadcast(n: int, rates: list[float], duration_s: float) -> list[Cell]:
    return [Cell("broadcast", n, r, duration_s) for r in rates]


def _personal(n: int, rates: list[float], duration_s: float) -> list[Cell]:
    return [Cell("personal", n, r, duration_s) for r in rates]


QUICK: list[Cell] = [
    *_broadcast(500, [10, 50, 200], 5),
    *_personal(1000, [100, 1000], 5),
    Cell("idle", 2000, duration_s=2),
]

FULL: list[Cell] = [
    *_broadcast(1000, [10, 50, 200, 800], 15),
    *_broadcast(10_000, [1, 5, 20], 15),
    *_personal(10_000, [100, 500, 2000, 8000], 15),
    Cell("idle", 1000, duration_s=5),
    Cell("idle", 10_000, duration_s=5),
    Cell("idle", 19_500, duration_s=5),
    # The most a RabbitMQ node with a 20,000-file limit accepts (see StompTarget.capacity).
    Cell("idle", 17_500, duration_s=5, targets=("stomp",)),
    Cell("idle", 100_000, duration_s=10, targets=("tidings",)),
]

PROFILES: dict[str, list[Cell]] = {"quick": QUICK, "full": FULL}
