"""One worker's own CPU per subscribe and per unsubscribe, with presence and join/leave
and without, in process: no sockets, no broker.

``python -m benchmarks.presence`` subscribes ``--subscribers`` connections, ``--per-channel``
to a channel, through the node's path (the hub, then presence and the join push to every
listener of the channel), writes the pushes to a transport that keeps nothing, then
unsubscribes them all, and prints CPU microseconds per subscribe and per unsubscribe, the
best of ``--rounds``, for a namespace without presence and for one with ``presence`` and
``join_leave`` (every subscriber asking for the pushes). With RabbitMQ each join and leave
is also one control message to the other workers (not measured here: the broker's side).
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import NamedTuple

from benchmarks.pipeline import _Transport, presence_settings
from tidings.clientinfo import ClientInfo
from tidings.flusher import Flusher
from tidings.log.memory import MemoryLog
from tidings.node import Node
from tidings.transport.websocket import WebSocketConnection

__all__ = ["Churn", "expected_pushes", "main", "measure"]


class Churn(NamedTuple):
    """CPU microseconds per subscribe and per unsubscribe, and the pushes they wrote."""

    subscribe_us: float
    unsubscribe_us: float
    pushes: int


def expected_pushes(subscribers: int, per_channel: int) -> int:
    """The join and leave pushes of a churn with every subscriber listening: the k-th
    joiner of a channel is pushed to the k members then there (itself included), and the
    k-th leaver to the members that remain (itself no longer)."""
    full, rest = divmod(subscribers, per_channel)

    def one(k: int) -> int:
        return k * (k + 1) // 2 + k * (k - 1) // 2

    return full * one(per_channel) + one(rest)


class _Manual:
    """The flusher's scheduler here: nothing is deferred, the churn flushes after every
    subscribe and unsubscribe, as the end of its command's loop turn would."""

    def call_soon(self, callback: object, /) -> None:
        return None

    def call_later(self, delay: float, callback: object, /) -> None:
        return None


def _round(presence: bool, subscribers: int, per_channel: int) -> Churn:
    """One churn outside any event loop, so that each join and leave is pushed at once,
    to the members of that moment (a running loop would batch them all to the end)."""
    node = Node(presence_settings(presence), MemoryLog())
    node.flusher = Flusher(_Manual(), pace=0)
    flush = node.flusher.flush
    conns = [WebSocketConnection(node, _Transport())  # type: ignore[arg-type]
             for _ in range(subscribers)]
    channels = [f"room{i // per_channel}" for i in range(subscribers)]
    infos = [ClientInfo(f"user{i}", str(uuid.UUID(int=i))) for i in range(subscribers)]
    _Transport.pushes = 0
    clock = time.process_time
    t0 = clock()
    for conn, channel, info in zip(conns, channels, infos, strict=True):
        node.subscribe(conn, channel, None)
        node.track(conn, channel, info, True)
        flush()
    t1 = clock()
    for conn, channel in zip(conns, channels, strict=True):
        node.unsubscribe(conn, channel)
        flush()
    t2 = clock()
    if node.hub.subscriptions or node.presence(channels[0]):
        raise RuntimeError("subscriptions left behind after the unsubscribes")
    return Churn((t1 - t0) / subscribers * 1e6, (t2 - t1) / subscribers * 1e6,
                 _Transport.pushes)


def measure(presence: bool, subscribers: int, per_channel: int, rounds: int) -> Churn:
    """The best of ``rounds`` churns, each on a fresh node.

    Raises:
        RuntimeError: a round wrote other than :func:`expected_pushes` (none without
            presence), or left a subscription behind.
    """
    want = expected_pushes(subscribers, per_channel) if presence else 0
    best = Churn(float("inf"), float("inf"), want)
    for _ in range(rounds):
        churn = _round(presence, subscribers, per_channel)
        if churn.pushes != want:
            raise RuntimeError(f"{churn.pushes:,} join/leave pushes written, not {want:,}")
        best = Churn(min(best.subscribe_us, churn.subscribe_us),
                     min(best.unsubscribe_us, churn.unsubscribe_us), want)
    return best


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure without and with presence, print both."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.presence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--per-channel", type=int, default=1,
                        help="subscribers of each channel (1: personal channels)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.subscribers < 1 or args.per_channel < 1:
        parser.error("--subscribers and --per-channel must be at least 1")
    print(f"{args.subscribers:,} subscribers, {args.per_channel:,} per channel, "
          f"best of {args.rounds}:")
    for label, on in (("without presence", False), ("presence+join_leave", True)):
        churn = measure(on, args.subscribers, args.per_channel, args.rounds)
        print(f"{label:>20}: subscribe {churn.subscribe_us:6.2f} us, unsubscribe "
              f"{churn.unsubscribe_us:6.2f} us, {churn.pushes / args.subscribers:,.1f} "
              f"join/leave pushes per subscriber")


if __name__ == "__main__":
    main()
