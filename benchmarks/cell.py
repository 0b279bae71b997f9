"""One cell on one target, each step bounded in time, turned into one record.

Start the server, open and subscribe every connection through the load generators, read the
server's memory, then (but for ``idle``) publish for the cell's duration and let the load
generators wait, up to a deadline, for what is still owed. ``personal-drain`` publishes while
the server is paused and times the backlog's delivery once it resumes; ``overload`` stops some
connections reading. benchmarks/README.md ("Workloads", "Columns") says what each figure means.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import signal
import time
from collections import Counter
from typing import Any

import psutil

from benchmarks.children import Child, ChildFailed, read_all
from benchmarks.monitor import Monitor, cpu_percent, processes, prometheus_value
from benchmarks.profiles import DRAIN, OVERLOAD, Cell
from benchmarks.stats import Histogram
from benchmarks.targets import PER_PROCESS_MAX, Target, TargetUnavailable, http_get

__all__ = ["await_publishers", "cell_budget_s", "collect", "connect_timeout_s",
           "drain_deadline_s", "loadgen_configs", "record_of", "run_cell", "summarise"]

# One raw-AMQP publisher offers 30,000 events/s for ~20 % of a core (``python -m
# benchmarks.publisher --capacity``); two share anything above 20,000/s.
PUBLISHER_MAX_RATE = 20_000
# How long publishers may take past their duration (flushing under broker flow control).
PUBLISH_GRACE_S = 30.0
DRAIN_STALL_S = 3.0
# personal-drain: how long a resumed server may go without delivering anything (it first
# reads the backlog from the stream), and the slowest drain rate waited for.
RESUME_STALL_S = 10.0
SLOWEST_DRAIN_PER_S = 2_000
# overload: events of ~4 KB, so that a paused client falls 1 MiB (tidings'
# client.max_queue_bytes) plus the kernel buffers behind in seconds at 100 events/s.
OVERLOAD_PAYLOAD_BYTES = 4096
# overload, tidings: history kept per channel. A client cut for 1 MiB of unsent ~4.2 KB
# pushes, with more in the kernel's buffers, has missed several hundred of them plus those
# published until it is back; the default (100) could never cover that, and recovery would
# be refused by design.
OVERLOAD_HISTORY_SIZE = 5000


def drain_deadline_s(cell: Cell) -> float:
    """How long the load generators wait for the events in flight once publishing ended
    (``personal-drain``: once the server resumed)."""
    if cell.workload == DRAIN:
        return max(60.0, cell.events / SLOWEST_DRAIN_PER_S)
    return max(10.0, cell.duration_s)


def connect_timeout_s(connections_per_loadgen: int) -> float:
    """How long the load generators may take to open their connections."""
    # Web-STOMP on two busy cores opens ~250 connections/s; allow for half of that.
    return 120 + connections_per_loadgen / 125


def cell_budget_s(cell: Cell) -> float:
    """An upper bound on one cell's wall time: the sum of every step's own limit (server
    start and stop, connecting, publishing, draining) plus slack. :mod:`benchmarks.run`
    stops a cell that passes it, as a backstop should some step hang in a new way."""
    start = 300.0  # tidings: 60 s + 15 s per worker; Web-STOMP: restarting its node
    connect = connect_timeout_s(min(cell.connections, PER_PROCESS_MAX)) + cell.duration_s
    publish = 30 + cell.duration_s + PUBLISH_GRACE_S
    drain = drain_deadline_s(cell) + 60
    return start + connect + publish + drain + 120


def _source_ip(slot: int) -> str:
    # 127.0.0.2 .. 127.0.0.251: each address has its own ~28,000 ephemeral ports.
    return f"127.0.0.{2 + slot % 250}"


def loadgen_configs(
    target: Target, cell: Cell, run_id: str, seed: int, ip_slot: int
) -> list[dict[str, Any]]:
    """The configurations of the load-generator processes that open ``cell``'s connections
    to ``target`` (:class:`benchmarks.loadgen.LoadgenConfig` as JSON)."""
    # At least one process per core: a single process reads the 1,000 pushes of a broadcast
    # event one socket after another, which alone adds ~10 ms to the last one's latency.
    count = max(
        math.ceil(cell.connections / PER_PROCESS_MAX), min(os.cpu_count() or 1, cell.connections)
    )
    share = math.ceil(cell.connections / count)
    configs = []
    for i in range(count):
        first = i * share
        n = min(share, cell.connections - first)
        configs.append({
            "target": target.name, "port": target.port, "source_ip": _source_ip(ip_slot + i),
            "user_first": first, "count": n, "workload": cell.traffic, "run_id": run_id,
            "seed": seed, "n_users": cell.connections, "secret": target.secret,
            "exchange": target.exchange, "slow": cell.slow,
        })
    return configs


def _publisher_configs(
    target: Target, cell: Cell, run_id: str, seed: int
) -> list[dict[str, Any]]:
    count = max(1, math.ceil(cell.rate / PUBLISHER_MAX_RATE))
    extra = {"payload_bytes": OVERLOAD_PAYLOAD_BYTES} if cell.workload == OVERLOAD else {}
    return [{
        "amqp_url": target.amqp_url, "exchange": target.exchange, "workload": cell.traffic,
        "rate": cell.rate / count, "duration_s": cell.duration_s, "run_id": run_id,
        "seed": seed, "index": i, "n_users": cell.connections, **extra,
    } for i in range(count)]


def _sum(records: list[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in records)


async def await_publishers(publishers: list[Child], timeout_s: float) -> list[dict[str, Any]]:
    """Each publisher's ``done`` record or, if it is still blocked at the deadline, its last
    ``progress`` record (and the publisher is killed)."""

    async def one(pub: Child) -> dict[str, Any]:
        last: dict[str, Any] = {"phase": "progress", "published": 0}
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                record = await pub.read(max(left, 0.01))
            except ChildFailed:
                if pub.proc.returncode is not None:
                    raise
                pub.proc.kill()
                return last
            if record["phase"] == "done":
                return record
            last = record

    return list(await asyncio.gather(*(one(p) for p in publishers)))


def _self_cpu(records: list[dict[str, Any]]) -> float | None:
    """Summed CPU of children over their longest wall time, in percent of one core."""
    records = [r for r in records if "wall_s" in r]
    if not records:
        return None
    wall = max(float(r["wall_s"]) for r in records)
    return round(100.0 * sum(float(r["cpu_s"]) for r in records) / wall, 1) if wall else None


def _counts(records: list[dict[str, Any]], key: str) -> Counter[str]:
    """The ``key`` tallies (reason or code -> count) of several records, summed."""
    merged: Counter[str] = Counter()
    for r in records:
        merged.update(r.get(key, {}))
    return merged


def _merge_errors(records: list[dict[str, Any]], key: str = "errors") -> dict[str, int]:
    return dict(_counts(records, key).most_common(5))


def record_of(target: str, cell: Cell) -> dict[str, Any]:
    """The fields every record of ``cell`` on ``target`` opens with."""
    return {"target": target, "cell": cell.name, "workload": cell.workload,
            "connections": cell.connections, "rate": cell.rate, "offered": cell.offered,
            "duration_s": cell.duration_s, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


async def run_cell(target: Target, cell: Cell, ip_slot: int) -> dict[str, Any]:
    """Measure ``cell`` on ``target``; always returns a record, whatever happened."""
    record = record_of(target.name, cell)
    if cell.connections > target.capacity():
        record.update(status="skipped", note=f"over this target's capacity here "
                      f"({target.capacity()} connections)")
        return record
    target.extra_env = ({"TIDINGS_CHANNELS_HISTORY_SIZE": str(OVERLOAD_HISTORY_SIZE)}
                        if cell.workload == OVERLOAD else {})
    if cell.workload == OVERLOAD:
        record["slow"] = cell.slow
    try:
        if cell.workload == "idle":
            await target.reset()
        await target.start(cell.connections, cell.workers)
    except TargetUnavailable as exc:
        record.update(status="skipped", note=str(exc))
        return record
    children: list[Child] = []
    try:
        record.update(await _measure(target, cell, ip_slot, children))
    except ChildFailed as exc:
        record.update(status="failed", note=str(exc))
    finally:
        for child in children:
            if child.proc.returncode is None:
                child.proc.kill()
        for child in children:
            await child.close()
        workers = getattr(target, "workers", None)
        if workers is not None:
            record["workers"] = workers
        if target.proc is not None and target.proc.returncode is not None:
            record.update(status="failed", note=f"server exited with {target.proc.returncode} "
                          f"during the cell: {target.log_tail()}")
        await target.stop()
    return record


async def _measure(
    target: Target, cell: Cell, ip_slot: int, children: list[Child]
) -> dict[str, Any]:
    run_id = f"{target.name}-{cell.name}-{secrets.token_hex(4)}"
    seed = secrets.randbelow(1 << 30)
    out: dict[str, Any] = {"run_id": run_id}
    lg_configs = loadgen_configs(target, cell, run_id, seed, ip_slot)
    monitor = Monitor({"server": target.server_pids(), "broker": target.broker_pids()})
    before = monitor.sample()

    loadgens = [await Child.spawn("loadgen", c, f"loadgen {c['source_ip']}") for c in lg_configs]
    children += loadgens
    ready = await read_all(loadgens, connect_timeout_s(max(c["count"] for c in lg_configs)))
    connected = _sum(ready, "connected")
    connect_hist = [r["connect_ms"] for r in ready]
    out.update(
        connected=connected, connect_failed=_sum(ready, "failed"),
        connect_wall_s=max(r["connect_wall_s"] for r in ready),
        connect_p50_ms=max((h["p50"] or 0) for h in connect_hist),
        connect_p99_ms=max((h["p99"] or 0) for h in connect_hist),
        errors=_merge_errors(ready),
    )
    if connected == 0:
        out.update(status="failed", note="no connection could be made")
        return out

    if cell.workload == "idle":
        await asyncio.sleep(cell.duration_s)  # let allocators and GC settle
    idle = monitor.sample()
    grown = idle[1]["server"].rss - before[1]["server"].rss
    out.update(
        server_rss_idle_mb=round(idle[1]["server"].rss / 2**20, 1),
        server_processes=idle[1]["server"].processes,
    )
    # Growth per connection means something only on a server without earlier cells' memory.
    if target.fresh_per_cell or cell.workload == "idle":
        out["rss_per_conn_kb"] = round(grown / connected / 1024, 2)
    if cell.workload == "idle":
        for lg in loadgens:
            lg.send({"cmd": "stop"})
        results = await read_all(loadgens, 60)
        out.update(status="partial" if out["connect_failed"] else "ok", loadgen_maxrss_mb=round(
            max(r["maxrss_kb"] for r in results) / 1024, 1))
        return out

    publishers = [
        await Child.spawn("publisher", c, f"publisher {c['index']}")
        for c in _publisher_configs(target, cell, run_id, seed)
    ]
    children += publishers
    await read_all(publishers, 30)
    if cell.workload == DRAIN:
        out.update(await _drain(target, cell, monitor, loadgens, publishers, ready))
        return out
    monitor.reset_peaks()
    monitor.start()
    start = monitor.sample()
    if cell.workload == OVERLOAD:  # right before publishing
        out["server_rss_idle_mb"] = round(start[1]["server"].rss / 2**20, 1)
    for lg in loadgens:
        lg.send({"cmd": "start"})
    done, window = await _publish(publishers, cell)
    results, end = await collect(loadgens, monitor, done, cell, DRAIN_STALL_S)
    summary, notes = summarise(results, done, cell, window, DRAIN_STALL_S,
                               out["connect_failed"], "publishing ended")
    out.update(summary)
    if cell.workload == OVERLOAD:
        out.update(await _overload(target, results))
        out["server_rss_end_mb"] = round(end[1]["server"].rss / 2**20, 1)
    behind_s = max(float(d.get("behind_s", 0)) for d in done)
    if behind_s > 0.02 * cell.duration_s:
        notes.append(f"publishers offered {out['publish_rate']:,.0f}/s of {cell.rate:,.0f}/s "
                     f"({behind_s:.1f} s behind, publisher CPU {_self_cpu(done)} %)")
    if notes:
        out["note"] = "; ".join(notes)
    out.update(_usage(start, end, monitor, ready, results, done))
    return out


async def _publish(
    publishers: list[Child], cell: Cell
) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """Let the publishers go and wait for them: their ``done`` records and when they started
    and ended (wall clock, ns)."""
    start_ns = time.time_ns()
    for pub in publishers:
        pub.send("go")
    done = await await_publishers(publishers, cell.duration_s + PUBLISH_GRACE_S)
    return done, (start_ns, time.time_ns())


_SLOW_SUMS = ("slow", "slow_cut", "slow_cut_paused", "slow_recovered_ok", "slow_recover_failed",
              "slow_reconnect_failed", "slow_replayed", "slow_received")


def merge_slow(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The load generators' slow-connection tallies of an ``overload`` cell, summed."""
    out: dict[str, Any] = {key: _sum(results, key) for key in _SLOW_SUMS}
    out["slow_close_codes"] = dict(_counts(results, "slow_close_codes"))
    firsts = [r["slow_cut_first_s"] for r in results if r.get("slow_cut_first_s") is not None]
    lasts = [r["slow_cut_last_s"] for r in results if r.get("slow_cut_last_s") is not None]
    out["slow_cut_first_s"] = min(firsts) if firsts else None
    out["slow_cut_last_s"] = max(lasts) if lasts else None
    out["slow_errors"] = _merge_errors(results, "slow_errors")
    return out


async def _overload(target: Target, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The slow connections' fate in an ``overload`` cell.

    ``slow_closed_3008``: slow connections cut by the server, and only as many as the server
    itself counted closing with 3008 (tidings' ``/metrics``; one worker). Other targets have
    no such code: theirs is 0 and ``slow_cut`` says whether they dropped slow clients at all.
    """
    out = merge_slow(results)
    out["slow_closed_3008"] = 0
    if target.name == "tidings":
        status, text = await http_get(target.port, "/metrics")
        if status != 200:
            out["slow_closed_3008"] = None
            return out
        sent = int(prometheus_value(text, "tidings_disconnects_total", {"code": "3008"}))
        out["server_closed_3008"] = sent
        out["server_recoveries"] = {
            o: int(prometheus_value(text, "tidings_recoveries_total", {"outcome": o}))
            for o in ("recovered", "failed")
            if prometheus_value(text, "tidings_recoveries_total", {"outcome": o})}
        out["slow_closed_3008"] = min(out["slow_cut"], sent)
    return out


def _signal_server(pids: list[int], sig: signal.Signals) -> int:
    """Send ``sig`` to the server's processes and all their descendants (a supervisor and its
    workers alike); returns how many got it."""
    sent = 0
    for proc in processes(pids):
        try:
            proc.send_signal(sig)
            sent += 1
        except psutil.Error:
            continue
    return sent


async def _drain(
    target: Target, cell: Cell, monitor: Monitor, loadgens: list[Child],
    publishers: list[Child], ready: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``personal-drain`` steps after connecting: pause the server, publish, resume,
    time the backlog's delivery."""
    out: dict[str, Any] = {}
    if not target.fresh_per_cell:
        # Web-STOMP's server is the broker: pausing it would stop the publishers too.
        return {"status": "skipped", "note": "the server is the broker; it cannot be paused"}
    pids = target.server_pids()
    paused = False
    try:
        out["server_processes_paused"] = _signal_server(pids, signal.SIGSTOP)
        paused = True
        done, window = await _publish(publishers, cell)
        await asyncio.sleep(0.5)  # let the stream settle the last chunk
        monitor.reset_peaks()
        monitor.start()
        start = monitor.sample()
        resume_ns = time.time_ns()
        _signal_server(pids, signal.SIGCONT)
        paused = False
        for lg in loadgens:  # their CPU clocks: over the drain
            lg.send({"cmd": "start"})
    finally:
        if paused:
            _signal_server(pids, signal.SIGCONT)
    results, end = await collect(loadgens, monitor, done, cell, RESUME_STALL_S)
    summary, notes = summarise(results, done, cell, window, RESUME_STALL_S,
                               _sum(ready, "failed"), "the server resumed")
    out.update(summary)
    firsts = [int(r["first_ns"]) for r in results if r.get("first_ns")]
    first_ns = min(firsts) if firsts else 0
    last_ns = max(int(r["last_ns"]) for r in results)
    span_s = (last_ns - first_ns) / 1e9 if first_ns else 0.0
    out.update(
        drain_per_s=round(out["delivered"] / span_s, 1) if span_s > 0 else None,
        drain_s=round(span_s, 3),
        resume_to_first_ms=round((first_ns - resume_ns) / 1e6, 1) if first_ns else None,
        resume_to_last_s=round((last_ns - resume_ns) / 1e9, 3) if last_ns else None,
        latency_meaningless=True,
    )
    notes.insert(0, f"events published while the server was paused, then drained: latency "
                 f"is time spent in the backlog, not a latency figure; drain rate "
                 f"{out['drain_per_s'] or 0:,.0f}/s over {span_s:.2f} s")
    if first_ns and first_ns < resume_ns:
        notes.append("events arrived before the server was resumed: it was not paused")
    out["note"] = "; ".join(notes)
    server_cpu_s = end[1]["server"].cpu_s - start[1]["server"].cpu_s
    busy_s = (last_ns - resume_ns) / 1e9 if last_ns > resume_ns else 0.0
    out.update(
        # server_cpu_pct (in _usage): from the resume to the end of the load generators'
        # wait (~0.1-0.3 s after the last arrival), as in other cells; drain_server_cpu_pct:
        # from the resume to the last arrival, which is when the server routes.
        server_cpu_s=round(server_cpu_s, 2),
        drain_server_cpu_pct=round(100 * server_cpu_s / busy_s, 1) if busy_s else None,
        **_usage(start, end, monitor, ready, results, done),
    )
    return out


def _usage(
    start: Any, end: Any, monitor: Any, ready: list[dict[str, Any]],
    results: list[dict[str, Any]], done: list[dict[str, Any]],
) -> dict[str, Any]:
    """CPU, memory and publishing figures of a cell, and the errors seen, from the monitor's
    samples and what the load generators (``ready``, ``results``) and publishers (``done``)
    reported."""
    return {
        "errors": _merge_errors([*ready, *results]),
        "server_cpu_pct": cpu_percent(start, end, "server"),
        "broker_cpu_pct": cpu_percent(start, end, "broker"),
        "host_cpu_pct": cpu_percent(start, end, "host"),
        "host_cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        # Children exit as they report, so their CPU comes from their own clocks.
        "loadgen_cpu_pct": _self_cpu(results),
        "loadgen_max_proc_cpu_pct": max(_self_cpu([r]) or 0.0 for r in results),
        "publisher_cpu_pct": _self_cpu(done),
        "server_rss_peak_mb": round(monitor.peak_rss["server"] / 2**20, 1),
        "publish_behind_s": max(float(d.get("behind_s", 0)) for d in done),
        "publish_blocked_s": max(float(d.get("blocked_s", 0)) for d in done),
        "publish_flush_s": max(float(d.get("flush_s", PUBLISH_GRACE_S)) for d in done),
    }


async def collect(
    loadgens: list[Any], monitor: Any, done: list[dict[str, Any]], cell: Cell, stall_s: float
) -> tuple[list[dict[str, Any]], Any]:
    """Tells the load generators what the publishers (their ``done`` records) published,
    waits for their results, stops the monitor; returns the results and the monitor's last
    sample."""
    deadline_s = drain_deadline_s(cell)
    published = [int(d["published"]) for d in done]
    for lg in loadgens:
        lg.send({"cmd": "drain", "published": published, "deadline_s": deadline_s,
                 "stall_s": stall_s})
    results = await read_all(loadgens, deadline_s + 60)
    end = monitor.sample()
    await monitor.stop()
    return results, end


def summarise(
    results: list[dict[str, Any]], done: list[dict[str, Any]], cell: Cell,
    window_ns: tuple[int, int], stall_s: float, refused: int, waited_since: str,
) -> tuple[dict[str, Any], list[str]]:
    """What the load generators counted, summed, with the cell's status, and the notes that
    explain a status other than ``ok``. ``window_ns``: when publishing started and ended;
    ``refused``: connections that could not be made; ``waited_since``: what the drain
    deadline ran from."""
    publish_start_ns, publish_end_ns = window_ns
    published = [int(d["published"]) for d in done]
    latency = Histogram()
    for r in results:
        latency.merge(Histogram.from_json(r["latency"]))
    last_ns = max(r["last_ns"] for r in results)
    delivered = _sum(results, "delivered")
    missing = _sum(results, "missing")
    span_s = max(last_ns - publish_start_ns, publish_end_ns - publish_start_ns) / 1e9
    received = _sum(results, "received")
    messages = _sum(results, "messages")
    reasons = {r["reason"] for r in results}
    expected = _sum(results, "expected")
    notes = []
    if "deadline" in reasons:
        status = "behind"
        notes.append(f"events still arriving {drain_deadline_s(cell):.0f} s after "
                     f"{waited_since} ({delivered:,} of {expected:,} delivered); stopped waiting")
    elif missing:
        status = "lossy"
        notes.append(f"{missing:,} events never arrived (nothing more for {stall_s:.0f} s)")
    else:
        status = "partial" if refused else "ok"
    if any(d["phase"] != "done" for d in done):
        status = "behind"
        notes.append(f"publishers still blocked by the broker's flow control "
                     f"{PUBLISH_GRACE_S:.0f} s after their duration; stopped")
    lat = latency.summary_ms()
    summary = {
        "status": status,
        "drain": sorted(reasons),
        "published": sum(published),
        "publish_rate": round(sum(published) / ((publish_end_ns - publish_start_ns) / 1e9), 1),
        "expected": expected,
        "delivered": delivered,
        "missing": missing,
        "duplicates": _sum(results, "duplicates"),
        "wasted": _sum(results, "wasted"),
        "stale": _sum(results, "stale"),
        "dropped": _sum(results, "dropped"),
        "delivered_per_s": round(delivered / span_s, 1) if span_s > 0 else None,
        "received_per_s": round(received / span_s, 1) if span_s > 0 else None,
        "pushes_per_message": round(received / messages, 2) if messages else None,
        "lag_s": round(max(0, last_ns - publish_end_ns) / 1e9, 3) if last_ns else None,
        "latency_p50_ms": lat["p50"],
        "latency_p95_ms": lat["p95"],
        "latency_p99_ms": lat["p99"],
        "latency_max_ms": lat["max"],
        "loadgen_maxrss_mb": round(max(r["maxrss_kb"] for r in results) / 1024, 1),
    }
    return summary, notes
