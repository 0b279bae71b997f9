"""One worker's own CPU per personal event, stage by stage, without sockets or a broker.

``python -m benchmarks.pipeline`` feeds events encoded as a stream holds them through the
path a worker runs for each (:data:`STAGES`: read, decode, route, flush to a transport that
keeps nothing) and prints CPU microseconds per event per stage, the best of ``--rounds``.
It barely depends on what else the host does: the one to run before and after a change to
the hot path. ``--presence`` measures twice in the same run, without presence and with
``presence`` and ``join_leave`` on every user channel (each subscriber in the presence set
and asking for the pushes), to show what they add to an event's delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import rstream

from tidings.clientinfo import ClientInfo
from tidings.config import ChannelOptions, Settings
from tidings.log.memory import MemoryLog
from tidings.log.message import decode
from tidings.log.stream_protocol import message_from_bytes
from tidings.node import Node
from tidings.transport.websocket import WebSocketConnection

__all__ = ["encoded_event", "main", "measure", "presence_settings"]

STAGES = ("read", "decode", "route", "flush")


class _Transport:
    """A transport that takes every write and holds nothing but a count of the pushes."""

    pushes = 0

    def write(self, data: bytes) -> None:
        _Transport.pushes += data.count(b'{"push":')

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def encoded_event(user: int, seq: int) -> bytes:
    """A personal event for ``user`` as the stream holds it: the benchmark's body, the
    ``x-tidings-channel`` header, exchange and routing key annotations, a creation time."""
    body = orjson.dumps({"run": "pipeline", "pub": 0, "seq": seq, "ts": time.time_ns(),
                         "user": user, "pad": ""})
    message = rstream.AMQPMessage(
        body=body,
        header=rstream.Header(durable=True, priority=0),
        application_properties={b"x-tidings-channel": f"user#{user}".encode()},
        properties=rstream.Properties(content_type=b"application/json",
                                      creation_time=int(time.time() * 1000)),
        message_annotations={b"x-exchange": b"bench.tidings",
                             b"x-routing-key": f"user.{user}".encode()},
    )
    return bytes(message)


def presence_settings(on: bool) -> Settings:
    """Default settings; with ``on``, top-level channels keep presence and join/leave."""
    if not on:
        return Settings()
    return dataclasses.replace(Settings(), channels=ChannelOptions(presence=True, join_leave=True))


async def _node(users: int, presence: bool) -> Node:
    """A node with one subscriber per user channel; with ``presence`` each is also in the
    presence set and listens for join/leave, and its own join push is written already."""
    node = Node(presence_settings(presence), MemoryLog())
    now = node.clock()
    options = node.settings.channels
    for user in range(users):
        conn = WebSocketConnection(node, _Transport())  # type: ignore[arg-type]
        node.hub.subscribe(conn, f"user#{user}", None, epoch="pipeline", head=0,
                           size=options.history_size, ttl=options.history_ttl, now=now)
        if presence:
            info = ClientInfo(str(user), str(uuid.UUID(int=user)))
            node.track(conn, f"user#{user}", info, True)
    await asyncio.sleep(0)  # the joins go out after the "commands" that made them
    node.flusher.flush()
    return node


async def measure(users: int, events: int, chunk: int, rounds: int,
                  seed: int = 7, presence: bool = False) -> dict[str, float]:
    """CPU microseconds per event of each stage, best of ``rounds`` (each a fresh node).

    Raises:
        RuntimeError: the worker did not write exactly one push per event.
    """
    draw = random.Random(seed)
    data = [encoded_event(draw.randrange(users), seq) for seq in range(events)]
    best = dict.fromkeys(STAGES, float("inf"))
    clock: Callable[[], float] = time.process_time
    for _ in range(rounds):
        node = await _node(users, presence)
        _Transport.pushes = 0
        spent = dict.fromkeys(STAGES, 0.0)
        consumed = -1
        offset = 0
        for start in range(0, events, chunk):
            t0 = clock()
            messages = [message_from_bytes(d, offset + i)
                        for i, d in enumerate(data[start:start + chunk])]
            t1 = clock()
            decoded = decode(messages, "pipeline", consumed, node.clock())
            t2 = clock()
            node.on_records(decoded.records)
            t3 = clock()
            node.flusher.flush()
            t4 = clock()
            consumed = decoded.consumed
            offset += len(messages)
            spent["read"] += t1 - t0
            spent["decode"] += t2 - t1
            spent["route"] += t3 - t2
            spent["flush"] += t4 - t3
        await asyncio.sleep(0)  # let the flushes the flusher scheduled run, empty
        if _Transport.pushes != events:
            raise RuntimeError(f"{_Transport.pushes:,} pushes written for {events:,} events")
        for stage in STAGES:
            best[stage] = min(best[stage], spent[stage] / events * 1e6)
    return best


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure, print one line per stage."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--chunk", type=int, default=100,
                        help="events per batch, as a stream chunk delivers them")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--presence", action="store_true",
                        help="also measure with presence and join/leave on, in the same run")
    args = parser.parse_args(argv)
    for on in (False, True) if args.presence else (False,):
        if args.presence:
            print("with presence and join_leave:" if on else "without presence:")
        result: dict[str, Any] = asyncio.run(measure(args.users, args.events, args.chunk,
                                                     args.rounds, presence=on))
        total = sum(result.values())
        for stage in STAGES:
            print(f"{stage:>7}: {result[stage]:6.2f} us/event")
        print(f"  total: {total:6.2f} us/event = {1e6 / total:,.0f} events per CPU-second "
              f"({args.users:,} users, {args.events:,} events in chunks of {args.chunk}, "
              f"best of {args.rounds})")


if __name__ == "__main__":
    main()
