"""Publisher process: timestamped, numbered JSON events into an exchange at a fixed rate.

A child of a cell (:mod:`benchmarks.children`): argv[1] is its :class:`PublisherConfig`; it
prints ``{"phase": "ready"}`` once connected, publishes for ``duration_s`` after any line on
stdin (``{"phase": "progress", ...}`` every second) and prints ``{"phase": "done", ...}`` once
the broker has every event. It speaks AMQP 0-9-1 itself (:class:`RawAmqpPublisher`), frames
encoded once, one ``send`` per 5 ms tick and no confirms: the load generator finds any loss.
Body and headers are described in benchmarks/README.md ("How it measures").

``python -m benchmarks.publisher --capacity`` measures the publishers alone (:func:`capacity`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import math
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import orjson
from pamqp import commands, frame, header
from pamqp.base import Frame
from pamqp.exceptions import UnmarshalingException

from benchmarks.adapters import channel_for, routing_key_for
from benchmarks.workload import user_draws

__all__ = ["PublisherConfig", "RawAmqpPublisher", "capacity", "main", "publish"]

# Publishing in 5 ms slices keeps the rate even without a write per message.
_TICK_S = 0.005
# Stop encoding while this much is still unwritten (the broker is throttling us): the backlog
# then shows as ``behind_s`` instead of growing without bound in this process.
_MAX_BUFFER = 4 * 2**20
_CHANNEL = 1
_FRAME_END = b"\xce"
# Body frame head: type 3, channel, payload size.
_BODY_HEAD = struct.Struct(">BHI")
_SIZE = struct.Struct(">Q")


class AmqpError(Exception):
    """The broker refused the connection or closed it (or the channel)."""


@dataclasses.dataclass(frozen=True)
class PublisherConfig:
    """Everything one publisher process needs; passed as JSON on the command line."""

    amqp_url: str
    exchange: str
    workload: str
    rate: float
    duration_s: float
    run_id: str
    seed: int
    index: int
    n_users: int
    payload_bytes: int = 64


class RawAmqpPublisher:
    """The least of an AMQP 0-9-1 client that publishes: connect, open one channel, write
    ``basic.publish`` + content header + body frames, notice a close or ``connection.blocked``.

    Writes go through an outgoing buffer on a non-blocking socket, so a broker that stops
    reading (flow control) never blocks the caller: :meth:`pump` writes what the kernel takes.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5672
        self.user = unquote(parts.username or "guest")
        self.password = unquote(parts.password or "guest")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        self.vhost = unquote(path) if path else "/"
        self.sock: socket.socket | None = None
        self._in = b""
        self._out = bytearray()
        #: Bytes handed to the kernel so far.
        self.sent_bytes = 0
        #: Bytes given to :meth:`write` so far.
        self.queued_bytes = 0
        self.blocked_since: float | None = None
        #: Seconds the broker said it blocked us (``connection.blocked``).
        self.blocked_s = 0.0
        self._method_cache: dict[str, bytes] = {}
        self._header_cache: dict[str, tuple[bytes, bytes]] = {}
        self._closed_ok = False
        self._channel_closed_ok = False

    # -- connection ---------------------------------------------------------------------

    def connect(self, timeout_s: float = 10.0) -> None:
        """Open the connection and channel 1 (blocking, bounded by ``timeout_s``).

        Raises:
            AmqpError: the broker refused the login or the virtual host.
            OSError: the socket failed or timed out.
        """
        sock = socket.create_connection((self.host, self.port), timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        deadline = time.monotonic() + timeout_s
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        self._expect(commands.Connection.Start, deadline)
        sock.sendall(frame.marshal(commands.Connection.StartOk(
            client_properties={
                "product": "tidings-bench-publisher",
                "capabilities": {"connection.blocked": True},
            },
            mechanism="PLAIN", response=f"\0{self.user}\0{self.password}", locale="en_US",
        ), 0))
        tune = self._expect(commands.Connection.Tune, deadline)
        assert isinstance(tune, commands.Connection.Tune)
        # No heartbeats: a publisher lives for seconds, and one that stalls is killed anyway.
        sock.sendall(
            frame.marshal(commands.Connection.TuneOk(
                channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0), 0)
            + frame.marshal(commands.Connection.Open(virtual_host=self.vhost), 0)
        )
        self._expect(commands.Connection.OpenOk, deadline)
        sock.sendall(frame.marshal(commands.Channel.Open(), _CHANNEL))
        self._expect(commands.Channel.OpenOk, deadline)
        sock.setblocking(False)

    def _expect(self, kind: type[Frame], deadline: float) -> Frame:
        assert self.sock is not None
        while True:
            for value in self._frames():
                if isinstance(value, kind):
                    return value
                self._check(value)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind.__name__} from the broker")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise AmqpError(f"the broker closed the connection before {kind.__name__}")
            self._in += data

    def _frames(self) -> list[Frame]:
        values = []
        while len(self._in) >= 8:
            size = int.from_bytes(self._in[3:7], "big")
            if len(self._in) < size + 8:
                break
            try:
                used, _channel, value = frame.unmarshal(self._in[:size + 8])
            except UnmarshalingException as exc:
                raise AmqpError(f"cannot read a frame from the broker: {exc}") from exc
            self._in = self._in[used:]
            values.append(value)
        return values

    def _check(self, value: object) -> None:
        if isinstance(value, commands.Connection.Close | commands.Channel.Close):
            raise AmqpError(f"{value.name}: {value.reply_code} {value.reply_text}")
        if isinstance(value, commands.Connection.CloseOk):
            self._closed_ok = True
        elif isinstance(value, commands.Channel.CloseOk):
            self._channel_closed_ok = True
        elif isinstance(value, commands.Connection.Blocked):
            self.blocked_since = time.monotonic()
        elif isinstance(value, commands.Connection.Unblocked) and self.blocked_since is not None:
            self.blocked_s += time.monotonic() - self.blocked_since
            self.blocked_since = None

    # -- publishing ---------------------------------------------------------------------

    def method_frame(self, exchange: str, routing_key: str) -> bytes:
        """The encoded ``basic.publish`` frame for ``routing_key`` (cached)."""
        encoded = self._method_cache.get(routing_key)
        if encoded is None:
            encoded = self._method_cache[routing_key] = frame.marshal(
                commands.Basic.Publish(exchange=exchange, routing_key=routing_key), _CHANNEL)
        return encoded

    def header_parts(self, channel: str) -> tuple[bytes, bytes]:
        """The content header frame of an event for tidings channel ``channel``, cut around
        its 8-byte body size (cached): ``prefix + size + suffix``."""
        parts = self._header_cache.get(channel)
        if parts is None:
            encoded = frame.marshal(header.ContentHeader(0, 0, commands.Basic.Properties(
                content_type="application/json", headers={"x-tidings-channel": channel})),
                _CHANNEL)
            # Frame head (7 bytes), class id (2), weight (2), then the body size (8).
            parts = self._header_cache[channel] = (encoded[:11], encoded[19:])
        return parts

    def write(self, data: bytes) -> None:
        """Queue bytes for the broker; :meth:`pump` writes them."""
        self._out += data
        self.queued_bytes += len(data)

    @property
    def unsent(self) -> int:
        """Bytes queued but not yet taken by the kernel."""
        return len(self._out)

    def pump(self, timeout_s: float = 0.0) -> None:
        """Write what the kernel takes and read what the broker said, waiting at most
        ``timeout_s`` for the socket to become writable or readable.

        Raises:
            AmqpError: the broker closed the connection or the channel.
        """
        assert self.sock is not None
        want_write = [self.sock] if self._out else []
        readable, writable, _ = select.select([self.sock], want_write, [], timeout_s)
        if writable:
            try:
                n = self.sock.send(self._out)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise AmqpError(f"send failed: {exc}") from exc
            del self._out[:n]
            self.sent_bytes += n
        if readable:
            try:
                data: bytes | None = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as exc:
                raise AmqpError(f"recv failed: {exc}") from exc
            if data == b"":
                raise AmqpError("the broker closed the connection")
            if data:
                self._in += data
                for value in self._frames():
                    self._check(value)

    def flush(self, deadline: float, on_wait: Callable[[], None] | None = None) -> bool:
        """Write everything queued; False if ``deadline`` (monotonic) passed first."""
        while self._out:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.2))
            if on_wait is not None:
                on_wait()
        return True

    def close_channel(self, on_wait: Callable[[], None] | None = None) -> None:
        """Close the channel and wait for ``close-ok``, however long that takes: the broker
        answers once its channel has handled every publish before it, so the events are
        then routed (a broker under flow control stops reading our socket, and the wait is
        its throttling). The orchestrator bounds the wait by killing us."""
        self.write(frame.marshal(commands.Channel.Close(
            reply_code=200, reply_text="done", class_id=0, method_id=0), _CHANNEL))
        while not self._channel_closed_ok:
            self.pump(0.2)
            if on_wait is not None:
                on_wait()

    def close(self, timeout_s: float = 2.0) -> None:
        """Say ``connection.close``, wait (briefly) for ``close-ok``, then drop the socket."""
        if self.sock is None:
            return
        try:
            self.write(frame.marshal(commands.Connection.Close(
                reply_code=200, reply_text="done", class_id=0, method_id=0), 0))
            end = time.monotonic() + timeout_s
            self.flush(end)
            while not self._closed_ok and time.monotonic() < end:
                self.pump(0.05)
        except (AmqpError, OSError):
            pass  # closing anyway
        finally:
            self.sock.close()
            self.sock = None


class _Progress:
    """Counts events by the bytes the kernel took: an event counts once all its bytes did."""

    def __init__(self) -> None:
        # (bytes queued once the batch is in, events after the batch)
        self._batches: collections.deque[tuple[int, int]] = collections.deque()
        self.written = 0

    def add(self, queued_bytes: int, events: int) -> None:
        self._batches.append((queued_bytes, events))

    def update(self, sent_bytes: int) -> int:
        while self._batches and self._batches[0][0] <= sent_bytes:
            self.written = self._batches.popleft()[1]
        return self.written


def publish(cfg: PublisherConfig, conn: RawAmqpPublisher) -> tuple[int, float, float]:
    """Publish for ``cfg.duration_s`` at ``cfg.rate``.

    Returns:
        (events encoded, seconds behind the schedule at the end, seconds spent flushing).
    """
    draws = user_draws(cfg.seed, cfg.index, cfg.n_users)
    personal = cfg.workload == "personal"
    pad = "x" * cfg.payload_bytes
    dumps, now_ns, pack_size, pack_body = orjson.dumps, time.time_ns, _SIZE.pack, _BODY_HEAD.pack
    progress = _Progress()
    # Bounded batches: a publisher that cannot keep up still stops on time.
    batch_cap = max(1, int(cfg.rate * 10 * _TICK_S))
    seq = 0
    start = time.monotonic()
    end = start + cfg.duration_s
    next_report = start + 1.0
    next_tick = start
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_report:
            # The orchestrator keeps the last count, in case the broker blocks us for good.
            _say({"phase": "progress", "published": progress.update(conn.sent_bytes)})
            next_report += 1.0
        due = min(int((now - start) * cfg.rate), seq + batch_cap)
        if seq < due and conn.unsent < _MAX_BUFFER:
            parts = []
            for _ in range(due - seq):
                user = next(draws) if personal else None
                ch = channel_for(user)
                prefix, suffix = conn.header_parts(ch)
                body = dumps({"run": cfg.run_id, "pub": cfg.index, "seq": seq, "ts": now_ns(),
                              "user": user, "pad": pad})
                n = len(body)
                parts += (conn.method_frame(cfg.exchange, routing_key_for(user)), prefix,
                          pack_size(n), suffix, pack_body(3, _CHANNEL, n), body, _FRAME_END)
                seq += 1
            conn.write(b"".join(parts))
            progress.add(conn.queued_bytes, seq)
        if now >= next_tick:
            next_tick = now + _TICK_S
        # Until the next tick, unless the socket can take more of the buffer sooner.
        conn.pump(max(0.0, min(next_tick, end) - time.monotonic()))
        progress.update(conn.sent_bytes)
    behind = max(0.0, cfg.rate * cfg.duration_s - seq) / cfg.rate if cfg.rate else 0.0
    # Until the broker has handled every event (flush, then the channel's close-ok): that
    # belongs to the publishing time, as the broker's flow control may be what delays it.
    flush0 = time.monotonic()

    def report() -> None:
        nonlocal next_report
        if time.monotonic() >= next_report:
            _say({"phase": "progress", "published": progress.update(conn.sent_bytes)})
            next_report += 1.0

    conn.flush(float("inf"), report)
    conn.close_channel(report)
    return seq, behind, time.monotonic() - flush0


def _say(record: dict[str, object]) -> None:
    print(orjson.dumps(record).decode(), flush=True)


def run(cfg: PublisherConfig) -> None:
    """Connect, say ready, wait for the go line, publish, say done."""
    conn = RawAmqpPublisher(cfg.amqp_url)
    conn.connect()
    _say({"phase": "ready"})
    sys.stdin.readline()
    cpu0, wall0 = time.process_time(), time.monotonic()
    count, behind, flush_s = publish(cfg, conn)
    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    # The broker has every event: say so first (the orchestrator's clock stops there), then
    # close the connection.
    _say({
        "phase": "done",
        "published": count,
        "behind_s": round(behind, 3),
        "flush_s": round(flush_s, 3),
        "blocked_s": round(conn.blocked_s, 3),
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(wall_s, 3),
    })
    conn.close()


# -- capacity: the publishers alone ----------------------------------------------------------


async def capacity(amqp_url: str, rates: list[float], per_process: float, duration_s: float,
                   workload: str = "personal") -> list[dict[str, float]]:
    """Publish at each rate into a fresh stream (``bench.pubcap``, bound ``#`` to the topic
    exchange ``bench.pubcap``, no consumer; both deleted at the end) from as many processes
    as ``per_process`` asks for, as a cell starts them; return what was offered and what it
    cost. Prints each row as it is measured."""
    import pika  # the set-up only (the bench extra has it)

    from benchmarks.broker import beam_pids
    from benchmarks.cell import await_publishers
    from benchmarks.children import Child, read_all
    from benchmarks.monitor import Monitor, cpu_percent

    name = "bench.pubcap"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(name, exchange_type="topic", durable=True)
    monitor = Monitor({"broker": beam_pids()})
    rows = []
    try:
        for rate in rates:
            channel.queue_delete(name)
            channel.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
            channel.queue_bind(name, name, routing_key="#")
            count = max(1, math.ceil(rate / per_process))
            publishers = [await Child.spawn("publisher", dataclasses.asdict(PublisherConfig(
                amqp_url, name, workload, rate / count, duration_s, "capacity", 1, i, 10_000)),
                f"publisher {i}") for i in range(count)]
            try:
                await read_all(publishers, 30)
                start = monitor.sample()
                for pub in publishers:
                    pub.send("go")
                done = await await_publishers(publishers, duration_s + 30)
                end = monitor.sample()
            finally:
                for pub in publishers:
                    await pub.close()
            if any(d["phase"] != "done" for d in done):
                raise RuntimeError(f"a publisher was still blocked at {rate:g}/s")
            wall = end[0] - start[0]
            rows.append({
                "rate": rate, "processes": count,
                "published": sum(d["published"] for d in done),
                "offered_per_s": round(sum(d["published"] for d in done)
                                       / max(d["wall_s"] for d in done), 1),
                "publisher_cpu_pct": round(100 * sum(d["cpu_s"] for d in done) / wall, 1),
                "broker_cpu_pct": cpu_percent(start, end, "broker"),
                "behind_s": max(d["behind_s"] for d in done),
                "flush_s": max(d["flush_s"] for d in done),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            })
            print(orjson.dumps(rows[-1]).decode(), flush=True)
    finally:
        channel.queue_delete(name)
        channel.exchange_delete(name)
        connection.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.publisher '<PublisherConfig JSON>'`` (a child of the bench), or
    ``python -m benchmarks.publisher --capacity [--rates 10000,20000,30000]``."""
    args = sys.argv[1:] if argv is None else argv
    if args and not args[0].startswith("--"):
        run(PublisherConfig(**orjson.loads(args[0])))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.publisher")
    parser.add_argument("--capacity", action="store_true", required=True,
                        help="measure the publishers alone into a throw-away stream")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rates", default="10000,20000,30000")
    parser.add_argument("--per-process", type=float, default=None,
                        help="events/s per process (default: the bench's PUBLISHER_MAX_RATE)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workload", choices=("personal", "broadcast"), default="personal")
    opts = parser.parse_args(args)
    from benchmarks.cell import PUBLISHER_MAX_RATE

    asyncio.run(capacity(opts.amqp_url, [float(r) for r in opts.rates.split(",")],
                         opts.per_process or PUBLISHER_MAX_RATE, opts.duration, opts.workload))


if __name__ == "__main__":
    main()
