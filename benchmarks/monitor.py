"""CPU and memory of groups of processes (server, broker, load generators, publishers).

A group is a list of root PIDs; their children are included and re-discovered at each sample,
so a server's worker processes count with it. CPU is summed user+system seconds, RSS is summed
resident memory. A background task keeps the peak RSS of each group since the last reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import psutil

__all__ = ["GroupSample", "Monitor", "cpu_percent", "processes", "prometheus_value"]


@dataclass(frozen=True)
class GroupSample:
    """One reading of one group."""

    cpu_s: float
    rss: int
    processes: int


def processes(roots: list[int]) -> list[psutil.Process]:
    """The processes ``roots`` and all their descendants (those still alive)."""
    procs: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            procs[pid] = root
            for child in root.children(recursive=True):
                procs[child.pid] = child
        except psutil.Error:
            continue
    return list(procs.values())


def _read(roots: list[int]) -> GroupSample:
    cpu = 0.0
    rss = 0
    n = 0
    for proc in processes(roots):
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
            n += 1
        except psutil.Error:
            continue
    return GroupSample(cpu_s=cpu, rss=rss, processes=n)


class Monitor:
    """Samples named groups of processes; tracks peak RSS in the background."""

    def __init__(self, groups: dict[str, list[int]], interval_s: float = 0.5) -> None:
        self.groups = groups
        self.interval_s = interval_s
        self.peak_rss: dict[str, int] = dict.fromkeys(groups, 0)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> tuple[float, dict[str, GroupSample]]:
        """Read every group now; returns (monotonic time, samples).

        The pseudo-group ``host`` holds the busy CPU seconds of the whole machine, so that
        CPU used by anything outside the benchmark shows up.
        """
        now = time.monotonic()
        samples = {name: _read(pids) for name, pids in self.groups.items()}
        host = psutil.cpu_times()
        samples["host"] = GroupSample(
            cpu_s=sum(host) - host.idle - getattr(host, "iowait", 0.0), rss=0, processes=0
        )
        for name, s in samples.items():
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), s.rss)
        return now, samples

    def reset_peaks(self) -> None:
        """Forget the peaks seen so far."""
        self.peak_rss = dict.fromkeys(self.groups, 0)

    async def _loop(self) -> None:
        while True:
            # psutil reads /proc synchronously; a few processes take well under a millisecond.
            self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        """Start background peak tracking."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop background peak tracking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def cpu_percent(
    a: tuple[float, dict[str, GroupSample]], b: tuple[float, dict[str, GroupSample]], group: str
) -> float | None:
    """CPU use of ``group`` between two samples, in percent of one core (200 = both cores)."""
    wall = b[0] - a[0]
    if wall <= 0 or group not in a[1] or group not in b[1]:
        return None
    return round(100.0 * (b[1][group].cpu_s - a[1][group].cpu_s) / wall, 1)


def prometheus_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples of metric ``name`` whose labels include ``labels``, in a
    Prometheus text exposition (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        found = {}
        for pair in rest.rstrip("}").split(","):
            key, eq, val = pair.partition("=")
            if eq:
                found[key.strip()] = val.strip().strip('"')
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            try:
                total += float(value)
            except ValueError:
                continue
    return total
