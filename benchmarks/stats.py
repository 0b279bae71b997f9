"""A mergeable log-bucketed latency histogram.

Keeping every latency of a 19,500-connection broadcast would cost hundreds of MB per load
generator; buckets of ~2.2 % relative width cost a few kB and merge across processes by
adding counts. Percentiles are reported as the bucket's upper bound, the exact max is kept.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Histogram"]

# 32 buckets per power of two: ~2.2 % relative resolution.
_SUB = 32


class Histogram:
    """Counts of values (microseconds) in logarithmic buckets."""

    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, value_us: float) -> None:
        """Record one value; values below 1 us count as 1 us."""
        v = value_us if value_us > 1.0 else 1.0
        index = int(math.log2(v) * _SUB)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += v
        if v > self.max:
            self.max = v

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts into this one."""
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float | None:
        """Return the upper bound of the bucket holding quantile ``q`` (0..100), or None."""
        if not self.count:
            return None
        rank = math.ceil(self.count * q / 100.0)
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(math.pow(2.0, (index + 1) / _SUB), self.max)
        return self.max

    def summary_ms(self) -> dict[str, float | None]:
        """Return p50/p95/p99/max/mean in milliseconds, rounded to 0.01 ms."""

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v / 1000.0, 2)

        return {
            "p50": ms(self.percentile(50)),
            "p95": ms(self.percentile(95)),
            "p99": ms(self.percentile(99)),
            "max": ms(self.max if self.count else None),
            "mean": ms(self.total / self.count if self.count else None),
        }

    def to_json(self) -> dict[str, Any]:
        """Serialise for the pipe between processes."""
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "total": self.total,
            "max": self.max,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        """Inverse of :meth:`to_json`."""
        h = cls()
        h.buckets = {int(k): int(v) for k, v in data["buckets"].items()}
        h.count = int(data["count"])
        h.total = float(data["total"])
        h.max = float(data["max"])
        return h
