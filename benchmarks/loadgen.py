"""Load-generator process: hold many WebSocket connections and count what they receive.

Run by :mod:`benchmarks.run`, one process per ~19,500 connections (the open-file limit), each
from its own 127.0.0.x source address. It talks to the orchestrator in JSON lines:

- argv[1] is the :class:`LoadgenConfig` as JSON;
- it prints ``{"phase": "ready", ...}`` once every connection is subscribed or has failed;
- stdin ``{"cmd": "start"}`` marks the start of publishing (its CPU clock restarts there);
- stdin ``{"cmd": "drain", "published": [...], "deadline_s": D, "stall_s": S}`` gives each
  publisher's final count; it waits until every owed event arrived, or nothing arrived for S
  seconds, or D seconds passed, prints ``{"phase": "result", ...}`` and exits;
- stdin ``{"cmd": "stop"}`` (idle workload) prints the result at once and exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import sys
import time
from typing import Any

import orjson

from benchmarks.adapters import (
    BaselineSession,
    Session,
    StompSession,
    TidingsSession,
)
from benchmarks.stats import Histogram
from benchmarks.workload import expected_per_user
from benchmarks.wsclient import Counters, WsConnection, open_connection

__all__ = ["LoadgenConfig", "main"]


@dataclasses.dataclass(frozen=True)
class LoadgenConfig:
    """Everything one load-generator process needs; passed as JSON on the command line."""

    target: str
    port: int
    source_ip: str
    user_first: int
    count: int
    workload: str
    run_id: str
    seed: int
    n_users: int
    host: str = "127.0.0.1"
    secret: str = ""
    exchange: str = ""
    concurrency: int = 256
    connect_timeout_s: float = 60.0


def _session(cfg: LoadgenConfig, index: int) -> Session:
    uid = cfg.user_first + index
    user = uid if cfg.workload == "personal" else None
    if cfg.target == "baseline":
        return BaselineSession(user)
    if cfg.target == "stomp":
        return StompSession(user, cfg.exchange)
    if cfg.target == "tidings":
        return TidingsSession(user, TidingsSession.make_token(uid, cfg.secret))
    raise ValueError(f"unknown target {cfg.target!r}")


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
    sys.stdout.buffer.flush()


class LoadGenerator:
    """The connections of one process and the tallies over them."""

    def __init__(self, cfg: LoadgenConfig) -> None:
        self.cfg = cfg
        self.counters = Counters(run_id=cfg.run_id, personal=cfg.workload == "personal")
        self.conns: list[WsConnection] = []
        self.connect_latency = Histogram()
        self.failed = 0
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()

    async def connect_all(self) -> dict[str, Any]:
        """Open every connection with bounded concurrency; return the ``ready`` record."""
        cfg = self.cfg
        gate = asyncio.Semaphore(cfg.concurrency)
        started = time.monotonic()

        async def one(index: int) -> None:
            session = _session(cfg, index)
            async with gate:
                t0 = time.monotonic()
                try:
                    conn = await asyncio.wait_for(
                        open_connection(
                            session, cfg.host, cfg.port, cfg.source_ip, self.counters
                        ),
                        cfg.connect_timeout_s,
                    )
                except (OSError, ConnectionError, TimeoutError) as exc:
                    self.failed += 1
                    self.counters.error(f"connect: {type(exc).__name__}: {exc}")
                    return
                self.connect_latency.add((time.monotonic() - t0) * 1e6)
                self.conns.append(conn)

        await asyncio.gather(*(one(i) for i in range(cfg.count)))
        return {
            "phase": "ready",
            "connected": len(self.conns),
            "failed": self.failed,
            "connect_wall_s": round(time.monotonic() - started, 3),
            "connect_ms": self.connect_latency.summary_ms(),
            "errors": self.counters.errors,
            "cpu_s": round(time.process_time() - self._cpu0, 3),
        }

    async def keep_alive(self) -> None:
        """Send each session's keep-alive on its period, for as long as the process runs.

        It runs from the first connection on: opening 19,500 connections takes longer than
        a heart-beat period, and the first ones would be declared dead meanwhile.
        """
        period = _session(self.cfg, 0).keepalive_s
        if period is None:
            return
        while True:
            await asyncio.sleep(period)
            for conn in self.conns:
                if not conn.closed:
                    conn.send_text(conn.session.keepalive())

    def start(self) -> None:
        """Restart the CPU and wall clocks at the start of the measured window."""
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()

    def _owed(self, published: list[int]) -> dict[int, int]:
        per_conn = {}
        if self.cfg.workload == "broadcast":
            total = sum(published)
            per_conn = {id(c): total for c in self.conns}
        elif self.cfg.workload == "personal":
            users = range(self.cfg.user_first, self.cfg.user_first + self.cfg.count)
            owed = expected_per_user(self.cfg.seed, published, self.cfg.n_users, users)
            per_conn = {id(c): owed[c.session.user or 0] for c in self.conns}
        return per_conn

    async def drain(self, published: list[int], deadline_s: float, stall_s: float) -> str:
        """Wait until every owed event arrived; return why the wait ended."""
        owed = self._owed(published)
        total = sum(owed.values())
        end = time.monotonic() + deadline_s
        last_progress = time.monotonic()
        last_seen = -1
        while True:
            got = sum(min(c.unique, owed[id(c)]) for c in self.conns)
            if got >= total:
                return "complete"
            now = time.monotonic()
            if got != last_seen:
                last_seen, last_progress = got, now
            elif now - last_progress > stall_s:
                return "stalled"
            if now > end:
                return "deadline"
            await asyncio.sleep(0.1)

    def result(self, published: list[int], reason: str) -> dict[str, Any]:
        """Build the ``result`` record."""
        owed = self._owed(published)
        expected = sum(owed.values())
        unique = sum(min(c.unique, owed.get(id(c), 0)) for c in self.conns)
        c = self.counters
        return {
            "phase": "result",
            "reason": reason,
            "connected": len(self.conns),
            "failed": self.failed,
            "expected": expected,
            "delivered": unique,
            "missing": expected - unique,
            "duplicates": sum(conn.duplicates for conn in self.conns),
            "received": c.received,
            "wasted": c.wasted,
            "stale": c.stale,
            "dropped": c.dropped,
            "first_ns": c.first_ns,
            "last_ns": c.last_ns,
            "latency": c.latency.to_json(),
            "errors": dict(sorted(c.errors.items(), key=lambda kv: -kv[1])[:5]),
            "cpu_s": round(time.process_time() - self._cpu0, 3),
            "wall_s": round(time.monotonic() - self._wall0, 3),
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }

    def close(self) -> None:
        """Abort every connection."""
        for conn in self.conns:
            conn.close()


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(cfg: LoadgenConfig) -> None:
    """Connect, then obey the orchestrator's commands until ``drain`` or ``stop``."""
    gen = LoadGenerator(cfg)
    keeper = asyncio.create_task(gen.keep_alive())
    _emit(await gen.connect_all())
    reader = await _stdin_lines()
    while True:
        line = await reader.readline()
        if not line:  # the orchestrator went away
            keeper.cancel()
            gen.close()
            return
        cmd = orjson.loads(line)
        if cmd["cmd"] == "start":
            gen.start()
        elif cmd["cmd"] == "drain":
            published = [int(n) for n in cmd["published"]]
            reason = await gen.drain(published, float(cmd["deadline_s"]), float(cmd["stall_s"]))
            _emit(gen.result(published, reason))
            keeper.cancel()
            gen.close()
            return
        elif cmd["cmd"] == "stop":
            _emit(gen.result([], "idle"))
            keeper.cancel()
            gen.close()
            return


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m benchmarks.loadgen '<LoadgenConfig JSON>'``."""
    args = sys.argv[1:] if argv is None else argv
    cfg = LoadgenConfig(**orjson.loads(args[0]))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:  # the stdlib loop works, only slower
        asyncio.run(run(cfg))
    else:
        uvloop.run(run(cfg))


if __name__ == "__main__":
    main()
