"""One worker's writer alone: CPU and write calls per delivery, with and without paced flushes.

``python -m benchmarks.writer --connections 2000 --rate 200`` runs a real node, hub and
WebSocket connections in this process on N loopback sockets, which a child process only
reads (no parsing, so the measured side is the writer), and feeds ``rate`` broadcast
events/s through ``node.on_records``, everything due in one batch as a socket read would
hand it over. Each round runs every pace of ``--paces`` in turn (0: a flush every loop
turn; 1: the default) and prints one line each: this process's CPU per delivery, write
system calls per delivery (``syscw`` of ``/proc/self/io``) and how long an event waited
from its due time to the end of the flush that wrote it.
"""

from __future__ import annotations

import argparse
import asyncio
import select
import socket
import subprocess
import sys
import time

from tidings.config import AuthSettings, Settings
from tidings.flusher import Flusher
from tidings.log.memory import MemoryLog
from tidings.node import Node
from tidings.record import Record
from tidings.router import CHANNEL_HEADER
from tidings.transport.websocket import WebSocketConnection

__all__ = ["main"]

_BODY = b'{"run":"w","pub":0,"seq":1,"ts":1733150000000000000,"user":null}'


class _TimedFlusher(Flusher):
    """Notes, at the end of each flush, how long the events it wrote have waited."""

    __slots__ = ("delays", "due")

    def __init__(self, pace: float) -> None:
        super().__init__(pace=pace)
        self.due: list[float] = []
        self.delays: list[float] = []

    def flush(self) -> None:
        super().flush()
        now = time.perf_counter()
        self.delays.extend(now - t for t in self.due)
        self.due.clear()


def _drain(port: int, connections: int) -> None:
    """The child: opens the connections and reads until the writer closes them."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    poller = select.epoll()
    for s in socks:
        s.setblocking(False)
        poller.register(s.fileno(), select.EPOLLIN)
    by_fd = {s.fileno(): s for s in socks}
    buf = bytearray(1 << 16)
    open_ = len(socks)
    while open_:
        for fd, _ in poller.poll():
            try:
                if not by_fd[fd].recv_into(buf):
                    poller.unregister(fd)
                    open_ -= 1
            except BlockingIOError:
                pass


def _syscw() -> int:
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("syscw"):
                return int(line.split()[1])
    return 0


async def _round(connections: int, rate: float, seconds: float, pace: float) -> str:
    loop = asyncio.get_running_loop()
    node = Node(Settings(auth=AuthSettings(hmac_secret="w" * 32)), MemoryLog(), name="writer")
    flusher = node.flusher = _TimedFlusher(pace)
    listener = socket.create_server(("127.0.0.1", 0), backlog=connections)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.writer", "--drain", str(port), str(connections)]
    )
    conns = []
    for _ in range(connections):
        sock, _ = await loop.sock_accept(listener)
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock)
        conn = WebSocketConnection(node, transport)
        transport.set_protocol(conn)
        node.subscribe(conn, "bench", None)
        conns.append(conn)
    listener.close()
    headers = {CHANNEL_HEADER: "bench"}
    interval = 1.0 / rate
    position = 0
    cpu, writes = time.process_time(), _syscw()
    start = time.perf_counter()
    end = start + seconds
    while (now := time.perf_counter()) < end:
        due = int((now - start) * rate) + 1 - position
        records = []
        for _ in range(due):
            flusher.due.append(start + position * interval)
            position += 1
            records.append(Record(position, "bench", _BODY, time.time(), headers))
        if records:
            node.on_records(records)
        await asyncio.sleep(max(0.0, start + position * interval - time.perf_counter()))
    await asyncio.sleep(0.2)
    cpu, writes = time.process_time() - cpu, _syscw() - writes
    for conn in conns:
        conn.transport.close()
    await asyncio.to_thread(child.wait)
    deliveries = position * connections
    delays = sorted(flusher.delays) or [0.0]

    def ms(q: float) -> float:
        return delays[min(len(delays) - 1, int(q * len(delays)))] * 1e3

    return (
        f"pace {pace:g}: {deliveries / seconds:,.0f} deliveries/s, CPU {cpu / seconds:.0%} = "
        f"{cpu / deliveries * 1e6:.2f} us/delivery, {writes / deliveries:.4f} writes/delivery, "
        f"wait p50 {ms(0.5):.1f} p99 {ms(0.99):.1f} max {ms(1.0):.1f} ms"
    )


async def _run(args: argparse.Namespace) -> None:
    print(f"{args.connections:,} connections x {args.rate:g} events/s, {args.seconds:g} s a run")
    for _ in range(args.rounds):
        for pace in args.paces:
            print(await _round(args.connections, args.rate, args.seconds, pace), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and measure (or, with ``--drain``, be the reading child)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.writer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s to every connection")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paces", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--drain", type=int, nargs=2, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drain:
        _drain(*args.drain)
        return
    try:
        import uvloop
    except ImportError:
        asyncio.run(_run(args))
    else:
        uvloop.run(_run(args))


if __name__ == "__main__":
    main()
