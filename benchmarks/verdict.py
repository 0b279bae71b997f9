"""The issue's goals, judged from the cells of one run (never from figures typed in here).

:func:`judge` takes the records of one results file and gives one :class:`Line` per goal in
:data:`GOALS`: ``met``, ``not met`` with why, or ``not measured`` when the run has no cell
for it. benchmarks/README.md ("Targets") says which cells each goal is computed from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from benchmarks.profiles import DRAIN

__all__ = ["GOALS", "Line", "judge", "markdown"]

Record = dict[str, Any]

BROADCAST_P99_MS = 200.0
BROADCAST_RATIO = 10.0
PERSONAL_P99_MS = 50.0
PERSONAL_PER_WORKER = 20_000.0
# A cell's publishers kept to its offered rate when they reached this share of it.
PUBLISH_TOLERANCE = 0.99
IDLE_KB_PER_CONN = 10.0
IDLE_CELL_MAX = 19_500
HELD = 100_000
LIGHT_CELL = "broadcast-n1000-r10"
LIGHT_P99_MS = 15.0
# The original design's p99 in that cell on the machine the issue measured it on.
LIGHT_BASELINE_P99_MS = 52.0
# Under overload, tidings' RSS may grow (from right before publishing to its peak) by at most
# this much per slow connection (2 x client.max_queue_bytes, the default 1 MiB: the queue
# that a cut connection's unsent bytes may reach, plus the frames built for it) ...
OVERLOAD_MB_PER_SLOW = 2.0
# ... plus this much for everything else (the channel's history, allocator slack).
OVERLOAD_SLACK_MB = 32.0

GOALS = {
    "broadcast": f">= {BROADCAST_RATIO:g}x the baseline's delivered msg/s, p99 <= "
                 f"{BROADCAST_P99_MS:g} ms, nothing missing",
    "personal": f">= {PERSONAL_PER_WORKER:,.0f} events/s per worker, p99 <= "
                f"{PERSONAL_P99_MS:g} ms, nothing missing",
    "personal capacity": f">= {PERSONAL_PER_WORKER:,.0f} events/s per worker drained from a "
                         f"backlog (broker out of the way, latency not judged), nothing "
                         f"missing",
    "idle memory": f"<= {IDLE_KB_PER_CONN:g} KB RSS per idle connection (largest idle cell "
                   f"<= {IDLE_CELL_MAX:,})",
    "connections held": f"{HELD:,} concurrent connections (several workers)",
    "light load": f"p99 < {LIGHT_P99_MS:g} ms in {LIGHT_CELL}, nothing missing",
    "overload": f"slow clients cut with 3008, RSS growth bounded (<= {OVERLOAD_MB_PER_SLOW:g} "
                f"MB per slow client + {OVERLOAD_SLACK_MB:g} MB), unlike the baseline",
}

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"
# tidings first: each line speaks of it, then of the others beside it.
_TARGETS = ("tidings", "baseline", "stomp")


@dataclasses.dataclass(frozen=True)
class Line:
    """The verdict on one goal."""

    goal: str
    verdict: str
    measured: str

    @property
    def target(self) -> str:
        """What the goal asks for."""
        return GOALS[self.goal]


def _clean(r: Record, p99_ms: float) -> bool:
    """An ``ok`` cell with nothing missing and p99 within ``p99_ms``."""
    p99 = r.get("latency_p99_ms")
    return (r.get("status") == "ok" and r.get("missing") == 0 and p99 is not None
            and p99 <= p99_ms and (r.get("delivered_per_s") or 0) > 0)


def _of(records: Iterable[Record], target: str, workload: str) -> list[Record]:
    return [r for r in records if r.get("target") == target and r.get("workload") == workload]


def _best(records: list[Record], target: str, workload: str, p99_ms: float,
          rate: Any = None) -> Record | None:
    rate = rate or (lambda r: r["delivered_per_s"])
    ok = [r for r in _of(records, target, workload) if _clean(r, p99_ms)]
    return max(ok, key=rate) if ok else None


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.3g} ms"


def _describe(r: Record, rate: float | None = None, unit: str = "msg/s") -> str:
    rate = r["delivered_per_s"] if rate is None else rate
    return f"{rate:,.0f} {unit} ({r['cell']}, p99 {_ms(r['latency_p99_ms'])})"


def broadcast(records: list[Record]) -> Line:
    """tidings' best clean broadcast rate against the baseline's (and Web-STOMP's)."""
    best = {t: _best(records, t, "broadcast", BROADCAST_P99_MS)
            for t in _TARGETS}
    measured = {t: bool(_of(records, t, "broadcast")) for t in best}
    if not measured["tidings"] or not measured["baseline"]:
        missing = " and ".join(t for t in ("tidings", "baseline") if not measured[t])
        return Line("broadcast", NOT_MEASURED, f"no broadcast cell of {missing} in this run")
    parts = []
    for t in _TARGETS:
        if best[t] is not None:
            parts.append(f"{t} {_describe(best[t])}")
        elif measured[t]:
            parts.append(f"{t}: no broadcast cell qualifies")
    tidings, baseline, stomp = best["tidings"], best["baseline"], best["stomp"]
    if tidings is None or baseline is None:
        return Line("broadcast", NOT_MET, "; ".join(parts) + "; no ratio")
    ratio = tidings["delivered_per_s"] / baseline["delivered_per_s"]
    ratios = [f"{ratio:.2f}x the baseline"]
    if stomp is not None:
        ratios.append(f"{tidings['delivered_per_s'] / stomp['delivered_per_s']:.2f}x Web-STOMP")
    measured_text = "tidings = " + ", ".join(ratios) + ": " + "; ".join(parts)
    # A target whose highest cell still qualifies could do more than this run shows: for
    # tidings the ratio is then a floor, for the baseline a ceiling that proves nothing.
    unbounded = [t for t in _TARGETS
                 if best[t] is not None and _is_top(records, best[t])]
    if unbounded:
        measured_text += "; " + ", ".join(unbounded) + " passed its highest cell"
        if "baseline" in unbounded:
            return Line("broadcast", NOT_MET, measured_text
                        + " (the baseline's knee is above this run's cells: no ratio holds)")
    return Line("broadcast", MET if ratio >= BROADCAST_RATIO else NOT_MET, measured_text)


def _is_top(records: list[Record], r: Record) -> bool:
    """Whether ``r`` has the highest rate of its target's cells of its workload and size."""
    same = [o for o in _of(records, r["target"], r["workload"])
            if o.get("connections") == r.get("connections")]
    return all(o.get("rate", 0) <= r.get("rate", 0) for o in same)


def _workers(r: Record) -> int:
    return max(1, int(r.get("workers") or 1))


def personal(records: list[Record]) -> Line:
    """tidings' best clean personal rate per worker."""
    cells = _of(records, "tidings", "personal")
    if not cells:
        return Line("personal", NOT_MEASURED, "no personal cell of tidings in this run")

    def per_worker(r: Record) -> float:
        return routed_per_s(r) / _workers(r)

    best = _best(records, "tidings", "personal", PERSONAL_P99_MS, per_worker)
    if best is None:
        fastest = max(cells, key=lambda r: r.get("delivered_per_s") or 0)
        p99 = fastest.get("latency_p99_ms")
        return Line("personal", NOT_MET, f"no tidings personal cell qualifies (of "
                    f"{len(cells)}; the fastest, {fastest['cell']}: {fastest.get('status')}, "
                    f"{fastest.get('missing') or 0:,} missing, p99 "
                    f"{_ms(p99) if p99 is not None else 'none'})")
    rate = per_worker(best)
    workers = _workers(best)
    text = "tidings " + _describe(best, rate, "events/s per worker").replace(
        "(", f"({workers} worker{'s' if workers > 1 else ''}, ", 1)
    text += (f" (published at {best.get('publish_rate') or 0:,.0f}/s, all "
             f"{best.get('delivered') or 0:,} delivered: {best['delivered_per_s']:,.0f}/s "
             "counted to the last arrival)")
    if rate < PERSONAL_PER_WORKER:
        # The first cell offered the goal's rate says why it fell short: how busy the host was.
        offered = [r for r in cells if (r.get("offered") or 0) / _workers(r) >= PERSONAL_PER_WORKER]
        if offered:
            r = min(offered, key=lambda r: r.get("offered") or 0)
            p99 = r.get("latency_p99_ms")
            text += (f"; at {r['cell']}: {r.get('status')}, p99 "
                     f"{_ms(p99) if p99 is not None else 'none'}{host_load(r)}")
    return Line("personal", MET if rate >= PERSONAL_PER_WORKER else NOT_MET, text)


def routed_per_s(r: Record) -> float:
    """Events/s a cell that delivered everything had routed: the rate it offered when its
    publishers kept to it, else the rate they reached.

    Within 1 %: a publisher sends the events due by each tick, rounded down, so a cell
    offered 20,000/s publishes 19,99x/s. ``delivered_per_s`` (delivered events over the
    time from the first publish to the last arrival) would count the last event's
    latency against the rate as well."""
    offered = float(r.get("offered") or 0)
    reached = float(r.get("publish_rate") or r.get("delivered_per_s") or 0)
    return offered if offered and reached >= PUBLISH_TOLERANCE * offered else reached


def host_load(r: Record) -> str:
    """How busy a cell kept the host, by part (empty without the figures): a host near all
    its cores queues every event behind the others, whoever's work it is."""
    host, cores = r.get("host_cpu_pct"), r.get("host_cores")
    if not host or not cores:
        return ""
    parts = [f"{name} {r[key]:.0f}" for name, key in (
        ("tidings", "server_cpu_pct"), ("broker", "broker_cpu_pct"),
        ("publishers", "publisher_cpu_pct"), ("load generators", "loadgen_cpu_pct"),
    ) if r.get(key) is not None]
    return f", the host at {host:.0f} % of its {100 * cores} % ({', '.join(parts)})"


def personal_capacity(records: list[Record]) -> Line:
    """tidings' best drain rate per worker over clean ``personal-drain`` cells."""
    cells = _of(records, "tidings", DRAIN)
    if not cells:
        return Line("personal capacity", NOT_MEASURED,
                    f"no {DRAIN} cell of tidings in this run")

    def per_worker(r: Record) -> float:
        return float(r.get("drain_per_s") or 0) / _workers(r)

    clean = [r for r in cells if r.get("status") == "ok" and r.get("missing") == 0
             and per_worker(r) > 0]
    if not clean:
        worst = cells[-1]
        return Line("personal capacity", NOT_MET, f"no tidings {DRAIN} cell qualifies (of "
                    f"{len(cells)}; {worst['cell']}: {worst.get('status')}, "
                    f"{worst.get('missing') or 0:,} missing, "
                    f"{worst.get('delivered') or 0:,} delivered at "
                    f"{per_worker(worst):,.0f}/s per worker)")
    best = max(clean, key=per_worker)
    rate = per_worker(best)
    workers = _workers(best)
    text = (f"tidings {rate:,.0f} events/s per worker ({workers} worker"
            f"{'s' if workers > 1 else ''}, {best['cell']}: {best.get('delivered') or 0:,} "
            f"events in {best.get('drain_s') or 0:.2f} s")
    cpu = best.get("drain_server_cpu_pct", best.get("server_cpu_pct"))
    if cpu is not None:
        text += f", server CPU {cpu:.0f} %"
    text += ")"
    return Line("personal capacity", MET if rate >= PERSONAL_PER_WORKER else NOT_MET, text)


def _idle(records: list[Record], target: str) -> list[Record]:
    return [r for r in _of(records, target, "idle")
            if r.get("status") in ("ok", "partial") and r.get("connected")]


def idle_memory(records: list[Record]) -> Line:
    """KB per connection in tidings' largest idle cell of at most 19,500 connections."""
    if not _of(records, "tidings", "idle"):
        return Line("idle memory", NOT_MEASURED, "no idle cell of tidings in this run")
    parts = []
    verdict = NOT_MET
    for t in _TARGETS:
        cells = [r for r in _idle(records, t) if r["connections"] <= IDLE_CELL_MAX
                 and r.get("rss_per_conn_kb") is not None]
        if not cells:
            if t == "tidings":
                parts.append(f"tidings: no idle cell of at most {IDLE_CELL_MAX:,} "
                             f"connections qualifies")
            continue
        r = max(cells, key=lambda r: r["connections"])
        parts.append(f"{t} {r['rss_per_conn_kb']:.1f} KB ({r['cell']}, "
                     f"{r['connected']:,} connected)")
        if t == "tidings" and r["rss_per_conn_kb"] <= IDLE_KB_PER_CONN:
            verdict = MET
    return Line("idle memory", verdict, "; ".join(parts))


def connections_held(records: list[Record]) -> Line:
    """Connections tidings held in its idle cell of 100,000."""
    cells = [r for r in _of(records, "tidings", "idle") if r.get("connections", 0) >= HELD]
    if not cells:
        return Line("connections held", NOT_MEASURED,
                    f"no tidings idle cell of {HELD:,} connections in this run")
    r = max(cells, key=lambda r: r.get("connected") or 0)
    held = int(r.get("connected") or 0)
    text = f"tidings {held:,} of {r['connections']:,} ({r['cell']}, {r.get('status')}"
    if r.get("workers"):
        text += f", {r['workers']} workers"
    if r.get("rss_per_conn_kb") is not None:
        text += f", {r['rss_per_conn_kb']:.1f} KB each"
    text += ")"
    if r.get("note"):
        text += f": {r['note']}"
    return Line("connections held", MET if held >= HELD else NOT_MET, text)


def light_load(records: list[Record]) -> Line:
    """tidings' p99 in the light-load cell."""
    cells = {r["target"]: r for r in records if r.get("cell") == LIGHT_CELL}
    if "tidings" not in cells:
        return Line("light load", NOT_MEASURED, f"no {LIGHT_CELL} cell of tidings in this run")
    parts = []
    for t in _TARGETS:
        r = cells.get(t)
        if r is None:
            continue
        if r.get("latency_p99_ms") is None:
            parts.append(f"{t}: {r.get('status')}, no latency")
            continue
        text = f"{t} p99 {_ms(r['latency_p99_ms'])} (p50 {_ms(r['latency_p50_ms'])})"
        if r.get("status") != "ok" or r.get("missing"):
            text += f", {r.get('status')}, {r.get('missing') or 0:,} missing"
        parts.append(text)
    r = cells["tidings"]
    ok = (r.get("status") == "ok" and r.get("missing") == 0
          and r.get("latency_p99_ms") is not None and r["latency_p99_ms"] < LIGHT_P99_MS)
    base = cells.get("baseline")
    if r.get("latency_p99_ms") and base is not None and base.get("latency_p99_ms"):
        ratio = r["latency_p99_ms"] / base["latency_p99_ms"]
        asked = LIGHT_P99_MS / LIGHT_BASELINE_P99_MS
        parts.append(f"tidings' p99 is {ratio:.2f}x the baseline's (the issue's "
                     f"{LIGHT_P99_MS:g} ms against its {LIGHT_BASELINE_P99_MS:g} ms is "
                     f"{asked:.2f}x)")
    floor = cpu_floor(r)
    if floor:
        parts.append(floor)
    return Line("light load", MET if ok else NOT_MET, "; ".join(parts))


def cpu_floor(r: Record) -> str:
    """What a broadcast cell's CPU figures say about its latency on this host.

    All the work one event causes (the broker taking and delivering it, the server's
    routing and its ``N`` socket writes, the kernel carrying them, the load generators
    reading them) is done between its publish and the arrival of its last push. Spread
    perfectly over the host's cores, that CPU time per event is the least time the last
    push can take: a floor no server, however fast, gets under with this harness on this
    host. The same less the server's own share is the floor for a server that cost
    nothing. Empty when the cell lacks the figures.
    """
    rate, host, cores = r.get("publish_rate"), r.get("host_cpu_pct"), r.get("host_cores")
    if not rate or not host or not cores:
        return ""
    per_event_ms = host * 10.0 / rate  # percent of a core x 1,000 ms / 100
    server_ms = (r.get("server_cpu_pct") or 0.0) * 10.0 / rate
    loadgen_ms = (r.get("loadgen_cpu_pct") or 0.0) * 10.0 / rate
    return (f"CPU per event on this host: {per_event_ms:.1f} ms in all, of which tidings "
            f"{server_ms:.1f} ms and the load generators {loadgen_ms:.1f} ms (the rest: "
            f"broker, publisher, kernel); over {cores} cores the last of its "
            f"{r.get('connections') or 0:,} pushes needs at least {per_event_ms / cores:.1f} "
            f"ms, {(per_event_ms - server_ms) / cores:.1f} ms were tidings' share zero")


def overload_bound_mb(r: Record) -> float:
    """The RSS growth an overload cell may show and still count as bounded."""
    return OVERLOAD_MB_PER_SLOW * int(r.get("slow") or 0) + OVERLOAD_SLACK_MB


def overload(records: list[Record]) -> Line:
    """tidings' memory and slow-client cuts under overload, beside the other targets'."""
    cells = _of(records, "tidings", "overload")
    if not cells:
        return Line("overload", NOT_MEASURED, "no overload cell of tidings in this run")
    parts = []
    verdict = MET
    for t in _TARGETS:
        for r in _of(records, t, "overload"):
            peak, idle = r.get("server_rss_peak_mb"), r.get("server_rss_idle_mb")
            if peak is None or not idle:
                parts.append(f"{t} {r['cell']}: {r.get('status')}, no memory figures")
                if t == "tidings":
                    verdict = NOT_MET
                continue
            growth = peak - idle
            slow = int(r.get("slow") or 0)
            cut = int(r.get("slow_cut") or 0)
            text = (f"{t} {r['cell']}: RSS {idle:,.0f} -> peak {peak:,.0f} MB "
                    f"(+{growth:,.0f} MB), {cut:,} of {slow:,} slow cut")
            if t == "tidings":
                closed = int(r.get("slow_closed_3008") or 0)
                bound = overload_bound_mb(r)
                text += (f" ({closed:,} with 3008), {int(r.get('slow_recovered_ok') or 0):,} "
                         f"recovered; bound +{bound:,.0f} MB")
                if growth > bound or closed == 0:
                    verdict = NOT_MET
            parts.append(text)
    return Line("overload", verdict, "; ".join(parts))


def judge(records: Iterable[Record]) -> list[Line]:
    """One :class:`Line` per goal, from the records of one run."""
    rows = list(records)
    return [broadcast(rows), personal(rows), personal_capacity(rows), idle_memory(rows),
            connections_held(rows), light_load(rows), overload(rows)]


def markdown(lines: list[Line]) -> str:
    """The ``Targets`` section of a report."""
    out = ["## Targets", "",
           "Judged from this run's cells by `benchmarks/verdict.py`.", "",
           "| goal | target | verdict | measured |", "|---|---|---|---|"]
    for line in lines:
        verdict = f"**{line.verdict}**" if line.verdict == MET else line.verdict
        out.append(f"| {line.goal} | {line.target} | {verdict} | "
                   f"{line.measured.replace('|', '/')} |")
    return "\n".join(out) + "\n"
