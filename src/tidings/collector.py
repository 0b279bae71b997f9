"""How a long-running tidings process sets up Python's cyclic garbage collector.

Events are handled in batches (a stream chunk, then one round of writes), and every object
of a batch is alive until the batch is done. With CPython's default thresholds a young
collection runs after 700 net new container objects, so collections fall inside batches
and push their objects into the old generation. Every few seconds that starts a full
collection, which walks every connection's objects: with 10,000 connections and 20,000
events/s, pauses of 30-55 ms every 3-4 s, which set the 99th percentile of latency.
"""

from __future__ import annotations

import gc

__all__ = ["THRESHOLDS", "settle"]

#: Young collections after 50,000 net new container objects (a batch's objects are freed
#: by reference counting long before), the middle generation after 20 of them.
THRESHOLDS = (50_000, 20, 10)


def settle() -> None:
    """Collects once, moves every object that exists now out of the collector's way (they
    live as long as the process: modules, the app, the warm history) and sets
    :data:`THRESHOLDS`. Called once start-up is done."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
