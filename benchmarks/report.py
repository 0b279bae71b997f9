"""The one report: a results JSONL file as a Markdown page and a PNG plot beside it.

``python -m benchmarks.report benchmarks/results/quick.jsonl`` redraws ``quick.md`` and
``quick.png`` (:mod:`benchmarks.run` calls the same functions at the end). The page opens
with the command that reproduces it and the verdict of :mod:`benchmarks.verdict`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from benchmarks import verdict

__all__ = ["load", "markdown", "plot", "write_reports"]

_COLUMNS: list[tuple[str, str]] = [
    ("target", "target"),
    ("cell", "cell"),
    ("status", "status"),
    ("wk", "workers"),
    ("conn", "connected"),
    ("conn s", "connect_wall_s"),
    ("expected", "expected"),
    ("delivered", "delivered"),
    ("missing", "missing"),
    ("dup", "duplicates"),
    ("wasted", "wasted"),
    ("msg/s", "delivered_per_s"),
    ("drain/s", "drain_per_s"),
    ("push/msg", "pushes_per_message"),
    ("p50 ms", "latency_p50_ms"),
    ("p95 ms", "latency_p95_ms"),
    ("p99 ms", "latency_p99_ms"),
    ("max ms", "latency_max_ms"),
    ("lag s", "lag_s"),
    ("srv CPU %", "server_cpu_pct"),
    ("broker CPU %", "broker_cpu_pct"),
    ("srv RSS MB", "server_rss_peak_mb"),
    ("KB/conn", "rss_per_conn_kb"),
    ("pub/s", "publish_rate"),
    ("pub CPU %", "publisher_cpu_pct"),
    ("lg CPU %", "loadgen_max_proc_cpu_pct"),
    ("host CPU %", "host_cpu_pct"),
    ("host ref ms", "host_ref_ms"),
]

_COLOURS = {"baseline": "tab:red", "stomp": "tab:blue", "tidings": "tab:green"}


def load(path: Path) -> list[dict[str, Any]]:
    """Read one record per line; of several for one target and cell, keep the latest."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            record = orjson.loads(line)
            key = (record["target"], record["cell"])
            latest.pop(key, None)  # re-insert, so the order is that of the latest runs
            latest[key] = record
    return sorted(latest.values(), key=lambda r: r["target"])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _host(rows: list[dict[str, Any]]) -> list[str]:
    """Where and on what the run was measured: the commit(s), the cores and the host's
    reference time (``benchmarks/hostspeed.py``) over its cells; nothing for records that
    predate these fields."""
    refs = [r["host_ref_ms"] for r in rows if r.get("host_ref_ms")]
    if not refs:
        return []
    commits = sorted({str(r["commit"]) for r in rows if r.get("commit")})
    cores = sorted({int(r["host_cores"]) for r in rows if r.get("host_cores")})
    spread = f"{min(refs):g} ms" if min(refs) == max(refs) else f"{min(refs):g}-{max(refs):g} ms"
    return [f"Measured at {', '.join(commits) or 'an unknown commit'} on "
            f"{'/'.join(map(str, cores)) or '?'} cores; host reference time {spread} over the "
            f"cells (`benchmarks/hostspeed.py`, lower is faster: compare runs by it).", ""]


def _command(rows: list[dict[str, Any]]) -> list[str]:
    """The command that measures these cells again (``benchmarks.run`` writes it into every
    record); several when the file was added to with ``--append``."""
    commands = list(dict.fromkeys(str(r["command"]) for r in rows if r.get("command")))
    if not commands:
        return []
    then = "".join(f", then `{c} --append`" for c in commands[1:])
    return [f"Reproduce: `{commands[0]}`{then}.", ""]


def markdown(records: Iterable[dict[str, Any]], title: str) -> str:
    """A Markdown page: the command that reproduces it, the verdict on the goals, one table
    row per cell, then the notes of cells that were skipped, failed or fell behind."""
    rows = list(records)
    lines = [f"# {title}", "", *_command(rows), *_host(rows),
             verdict.markdown(verdict.judge(rows)), "## Cells", "",
             "| " + " | ".join(h for h, _ in _COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k)) for _, k in _COLUMNS) + " |")
    notes = [f"- {r['target']} {r['cell']}: {r['note']}" for r in rows if r.get("note")]
    errors = [f"- {r['target']} {r['cell']}: {r['errors']}" for r in rows if r.get("errors")]
    if notes:
        lines += ["", "Notes:", *notes]
    if errors:
        lines += ["", "Errors seen (top reasons, counts):", *errors]
    lines += ["", "Columns are described in benchmarks/README.md.", ""]
    return "\n".join(lines)


def plot(records: Iterable[dict[str, Any]], path: Path, title: str) -> None:
    """Delivered msgs/s and p99 latency against offered load, per workload and target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in records if r.get("delivered_per_s") is not None]
    workloads = [w for w in ("broadcast", "personal") if any(r["workload"] == w for r in measured)]
    if not workloads:
        return
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 4.5 * len(workloads)), squeeze=False)
    for row, workload in enumerate(workloads):
        for target, colour in _COLOURS.items():
            pts = sorted(
                (r for r in measured if r["workload"] == workload and r["target"] == target),
                key=lambda r: (r["connections"], r["offered"]),
            )
            for n in sorted({r["connections"] for r in pts}):
                series = [r for r in pts if r["connections"] == n]
                x = [r["offered"] for r in series]
                label = f"{target} (N={n:,})"
                style = "-o" if n == min(r["connections"] for r in pts) else "--s"
                axes[row][0].plot(x, [r["delivered_per_s"] for r in series], style,
                                  color=colour, label=label)
                axes[row][1].plot(x, [r["latency_p99_ms"] for r in series], style,
                                  color=colour, label=label)
                # A cross on every point where the target fell behind or lost events.
                bad = [r for r in series if r.get("status") != "ok"]
                axes[row][0].plot([r["offered"] for r in bad],
                                  [r["delivered_per_s"] for r in bad], "kx", markersize=9)
                axes[row][1].plot([r["offered"] for r in bad],
                                  [r["latency_p99_ms"] for r in bad], "kx", markersize=9)
        ax_rate, ax_lat = axes[row]
        offered = [r["offered"] for r in measured if r["workload"] == workload]
        lo, hi = min(offered), max(offered)
        ax_rate.plot([lo, hi], [lo, hi], ":", color="grey", label="offered")
        ax_rate.set(title=f"{workload}: delivered msgs/s (x: fell behind or lost events)",
                    xlabel="offered deliveries/s", ylabel="delivered msgs/s")
        goal_ms = (verdict.BROADCAST_P99_MS if workload == "broadcast"
                   else verdict.PERSONAL_P99_MS)
        ax_lat.axhline(goal_ms, linestyle="--", color="grey", label=f"goal {goal_ms:g} ms")
        ax_lat.set(title=f"{workload}: p99 publish-to-receive latency",
                   xlabel="offered deliveries/s", ylabel="p99 latency (ms)")
        for ax in (ax_rate, ax_lat):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(jsonl: Path) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.png`` beside ``jsonl``; return their paths."""
    records = load(jsonl)
    title = f"tidings benchmark: {jsonl.stem}"
    md = jsonl.with_suffix(".md")
    png = jsonl.with_suffix(".png")
    md.write_text(markdown(records, title))
    plot(records, png, title)
    return md, png


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        for written in write_reports(Path(arg)):
            print(written)
