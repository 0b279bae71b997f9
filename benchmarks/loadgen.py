"""Load-generator process: many WebSocket connections, counting what they receive.

A child of a cell (:mod:`benchmarks.children`), one per ~19,500 connections, from its own
127.0.0.x address. argv[1] is its :class:`LoadgenConfig`; it prints ``{"phase": "ready"}``
once every connection is subscribed or failed, then obeys stdin: ``{"cmd": "start"}`` (the
measured window opens; ``overload``'s slow connections stop reading), ``{"cmd": "drain",
"published": [...], "deadline_s": D, "stall_s": S}`` (wait for what is owed, print the result
and exit) or ``{"cmd": "stop"}`` (print the result now and exit).
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
from benchmarks.profiles import is_slow
from benchmarks.stats import Histogram
from benchmarks.workload import expected_per_user
from benchmarks.wsclient import Counters, WsConnection, open_connection
from tidings import collector

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
    #: ``overload``: slow connections among all ``n_users`` (0: none).
    slow: int = 0


def _session(
    cfg: LoadgenConfig, index: int, recover_from: tuple[int, str] | None = None
) -> Session:
    uid = cfg.user_first + index
    user = uid if cfg.workload == "personal" else None
    if cfg.target == "baseline":
        return BaselineSession(user)
    if cfg.target == "stomp":
        return StompSession(user, cfg.exchange)
    if cfg.target == "tidings":
        return TidingsSession(user, TidingsSession.make_token(uid, cfg.secret), recover_from)
    raise ValueError(f"unknown target {cfg.target!r}")


# Linux tcpi_state of an open connection.
_TCP_ESTABLISHED = 1
_SLOW_POLL_S = 0.2
# Receive buffer of a slow connection (the kernel doubles it to 128 KB).
SLOW_RCVBUF = 65536
# How long a cut slow connection reads what its kernel buffered before it reconnects.
_SLOW_READ_S = 3.0


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
    sys.stdout.buffer.flush()


class LoadGenerator:
    """The connections of one process and the tallies over them."""

    def __init__(self, cfg: LoadgenConfig) -> None:
        self.cfg = cfg
        self.counters = Counters(run_id=cfg.run_id, personal=cfg.workload == "personal")
        # Slow connections' events (read late, or replayed) stay out of the figures of the
        # others.
        self.slow_counters = Counters(run_id=cfg.run_id, personal=False)
        self.conns: list[WsConnection] = []
        self.slow_conns: list[tuple[int, WsConnection]] = []
        self.recovered_conns: list[WsConnection] = []
        self.slow_stats: dict[str, Any] = {
            "slow": 0, "slow_cut": 0, "slow_cut_paused": 0, "slow_close_codes": {},
            "slow_recovered_ok": 0, "slow_recover_failed": 0, "slow_reconnect_failed": 0,
            "slow_replayed": 0,
            "slow_cut_first_s": None, "slow_cut_last_s": None,
        }
        self._slow_tasks: list[asyncio.Task[None]] = []
        self._slow_pending: dict[int, WsConnection] = {}
        self._watcher: asyncio.Task[None] | None = None
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
            slow = is_slow(cfg.user_first + index, cfg.n_users, cfg.slow)
            counters = self.slow_counters if slow else self.counters
            async with gate:
                t0 = time.monotonic()
                try:
                    conn = await asyncio.wait_for(
                        open_connection(
                            session, cfg.host, cfg.port, cfg.source_ip, counters,
                            SLOW_RCVBUF if slow else None,
                        ),
                        cfg.connect_timeout_s,
                    )
                except (OSError, ConnectionError, TimeoutError) as exc:
                    self.failed += 1
                    self.counters.error(f"connect: {type(exc).__name__}: {exc}")
                    return
                self.connect_latency.add((time.monotonic() - t0) * 1e6)
                if slow:
                    conn.slow = True
                    self.slow_conns.append((index, conn))
                else:
                    self.conns.append(conn)

        await asyncio.gather(*(one(i) for i in range(cfg.count)))
        return {
            "phase": "ready",
            "connected": len(self.conns) + len(self.slow_conns),
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
            for conn in [*self.conns, *(c for _, c in self.slow_conns),
                         *self.recovered_conns]:
                if not conn.closed:
                    conn.send_text(conn.session.keepalive())

    def start(self) -> None:
        """Restart the CPU and wall clocks at the start of the measured window; slow
        connections stop reading."""
        self._cpu0 = time.process_time()
        self._wall0 = time.monotonic()
        if self.slow_conns:
            self.slow_stats["slow"] = len(self.slow_conns)
            for _, conn in self.slow_conns:
                conn.pause()
            self._slow_pending = dict(self.slow_conns)
            self._watcher = asyncio.create_task(self._watch_slow())

    async def _watch_slow(self) -> None:
        """Notice slow connections the server reset while they were paused."""
        pending = self._slow_pending
        while pending:
            await asyncio.sleep(_SLOW_POLL_S)
            for index, conn in list(pending.items()):
                if not conn.closed and conn.tcp_state() in (_TCP_ESTABLISHED, None):
                    continue
                del pending[index]
                self.slow_stats["slow_cut_paused"] += 1
                self._slow_tasks.append(asyncio.create_task(self._after_cut(index, conn)))

    def end_slow(self) -> None:
        """Publishing is over: every slow connection not known to be cut reads again. A
        server that closed it behind the bytes it had queued (a FIN, which a paused client
        cannot see) shows it now."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        for index, conn in list(self._slow_pending.items()):
            del self._slow_pending[index]
            self._slow_tasks.append(asyncio.create_task(self._after_cut(index, conn)))

    async def _after_cut(self, index: int, conn: WsConnection) -> None:
        """Read what the connection still holds; if the server closed it, count it cut and
        (tidings) come back recovering."""
        conn.resume()
        end = time.monotonic() + _SLOW_READ_S
        while not conn.closed and time.monotonic() < end:
            await asyncio.sleep(0.05)
        stats = self.slow_stats
        if not conn.closed:  # still open after reading what was there: never cut
            return
        stats["slow_cut"] += 1
        at = round(time.monotonic() - self._wall0, 2)
        if stats["slow_cut_first_s"] is None:
            stats["slow_cut_first_s"] = at
        stats["slow_cut_last_s"] = max(at, stats["slow_cut_last_s"] or 0)
        code = str(conn.close_code) if conn.close_code is not None else "unread"
        stats["slow_close_codes"][code] = stats["slow_close_codes"].get(code, 0) + 1
        session = conn.session
        if not isinstance(session, TidingsSession):
            return
        if session.offset is None or session.epoch is None:
            stats["slow_reconnect_failed"] += 1
            self.slow_counters.error("recover: no position seen before the cut")
            return
        fresh = _session(self.cfg, index, (session.offset, session.epoch))
        try:
            new = await asyncio.wait_for(open_connection(
                fresh, self.cfg.host, self.cfg.port, self.cfg.source_ip, self.slow_counters),
                self.cfg.connect_timeout_s)
        except (OSError, ConnectionError, TimeoutError) as exc:
            stats["slow_reconnect_failed"] += 1
            self.slow_counters.error(f"reconnect: {type(exc).__name__}: {exc}")
            return
        new.slow = True
        self.recovered_conns.append(new)
        assert isinstance(fresh, TidingsSession)
        if fresh.recovered:
            stats["slow_recovered_ok"] += 1
        else:
            stats["slow_recover_failed"] += 1
        stats["slow_replayed"] += fresh.replayed

    async def settle_slow(self, timeout_s: float = 15.0) -> None:
        """Give reads and reconnections under way ``timeout_s`` to finish."""
        tasks = [t for t in self._slow_tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def _owed(self, published: list[int]) -> dict[int, int]:
        per_conn = {}
        if self.cfg.workload in ("broadcast", "overload"):
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
        slow = {}
        if self.slow_conns:
            slow = dict(self.slow_stats, slow_received=self.slow_counters.received,
                        slow_errors=dict(sorted(self.slow_counters.errors.items(),
                                                key=lambda kv: -kv[1])[:5]))
        return {
            "phase": "result",
            "reason": reason,
            **slow,
            "connected": len(self.conns) + len(self.slow_conns),
            "failed": self.failed,
            "expected": expected,
            "delivered": unique,
            "missing": expected - unique,
            "duplicates": sum(conn.duplicates for conn in self.conns),
            "received": c.received,
            "messages": c.messages,
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
        for conn in [*self.conns, *(c for _, c in self.slow_conns), *self.recovered_conns]:
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
    # The same collector set-up as a tidings worker: the connections' objects are out of
    # its way, so its pauses do not count as the target's latency.
    collector.settle()
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
            gen.end_slow()
            reason = await gen.drain(published, float(cmd["deadline_s"]), float(cmd["stall_s"]))
            await gen.settle_slow()
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
