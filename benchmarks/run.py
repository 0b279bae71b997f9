"""Benchmark entry point: ``python -m benchmarks.run --profile quick`` (``make bench``).

Runs the profile cell by cell, each on every chosen target in turn, one at a time,
appending one JSON record per cell and target to ``benchmarks/results/<profile>.jsonl`` as it
goes, then writes ``<profile>.md`` (table) and ``<profile>.png`` (plot) beside it. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import orjson
import pika

from benchmarks.cell import cell_budget_s, record_of, run_cell
from benchmarks.hostspeed import code_version, reference_ms
from benchmarks.profiles import PROFILES, Cell
from benchmarks.report import write_reports
from benchmarks.targets import Target, TargetUnavailable, make_target

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"
ALL_TARGETS = "baseline,stomp,tidings"


def command(args: argparse.Namespace) -> str:
    """The command that measures the same cells again, as each record and report prints it
    (where the records go, ``--out`` and ``--append``, is left out)."""
    words = ["python", "-m", "benchmarks.run", "--profile", args.profile]
    if args.targets != ALL_TARGETS:
        words += ["--targets", args.targets]
    if args.cells:
        words += ["--cells", args.cells]
    if args.tidings_workers != 1:
        words += ["--tidings-workers", str(args.tidings_workers)]
    if args.stomp_broker != "private":
        words += ["--stomp-broker", args.stomp_broker]
    return shlex.join(words)


async def _run(args: argparse.Namespace) -> Path:
    # SIGTERM unwinds like Ctrl-C, so servers, children and the private broker are stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    cells = PROFILES[args.profile]
    if args.cells:
        pattern = re.compile(args.cells)
        cells = [c for c in cells if pattern.search(c.name)]
    targets = [
        make_target(name, args.amqp_url, args.stomp_broker == "private", args.tidings_workers)
        for name in args.targets.split(",")
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl: Path = args.out / f"{args.profile}.jsonl"
    # Source addresses rotate from cell to cell so that a cell never meets the previous
    # cell's sockets still in TIME_WAIT on the same address.
    ip_slot = 0
    run = {"commit": code_version(), "command": command(args)}
    with jsonl.open("ab" if args.append else "wb") as sink:
        ready = []
        try:
            for target in targets:
                try:
                    await asyncio.to_thread(target.prepare)
                except (TargetUnavailable, OSError, pika.exceptions.AMQPError) as exc:
                    print(f"[bench] {target.name}: unavailable: {exc!r}", file=sys.stderr)
                    for cell in cells:
                        if not cell.targets or target.name in cell.targets:
                            record = _skipped(target.name, cell, repr(exc)) | run
                            sink.write(orjson.dumps(record) + b"\n")
                    continue
                ready.append(target)
            # Cell by cell, each on every target in turn (first target rotating): a shared
            # host's speed drifts by the minute, and a ratio between targets is fair only
            # between cells measured close together.
            for index, cell in enumerate(cells):
                mine = [t for t in ready if not cell.targets or t.name in cell.targets]
                turn = index % len(mine) if mine else 0
                for target in mine[turn:] + mine[:turn]:
                    record = await _measure(target, cell, ip_slot, run)
                    ip_slot += 8
                    sink.write(orjson.dumps(record) + b"\n")
                    sink.flush()
                    print(f"[bench]   {_one_line(record)}", file=sys.stderr, flush=True)
                    await asyncio.sleep(1.0)  # let the broker drop the cell's queues
        finally:
            for target in ready:
                await asyncio.to_thread(target.close)
    return jsonl


async def _measure(
    target: Target, cell: Cell, ip_slot: int, run: dict[str, str]
) -> dict[str, Any]:
    """One cell on one target, as a record; a cell that fails or overruns says so."""
    print(f"[bench] {target.name} {cell.name} ...", file=sys.stderr, flush=True)
    budget = cell_budget_s(cell)
    # Right before the cell: a shared host's speed drifts within a run.
    host = {**run, "host_ref_ms": reference_ms()}
    try:
        record = await asyncio.wait_for(run_cell(target, cell, ip_slot), budget)
    except TimeoutError:
        record = _skipped(target.name, cell, f"did not end within its budget "
                          f"of {budget:.0f} s; stopped")
        record["status"] = "failed"
    except Exception as exc:  # one broken cell must not end the run
        traceback.print_exc()
        record = _skipped(target.name, cell, f"bench error: {exc!r}")
        record["status"] = "failed"
    record.update(host)
    return record


def _skipped(target: str, cell: Cell, why: str) -> dict[str, Any]:
    return record_of(target, cell) | {"status": "skipped", "note": why}


def _one_line(r: dict[str, object]) -> str:
    keys = ("status", "connected", "delivered", "expected", "missing", "delivered_per_s",
            "latency_p99_ms", "server_cpu_pct", "rss_per_conn_kb", "note")
    return " ".join(f"{k}={r[k]}" for k in keys if r.get(k) is not None)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--targets", default=ALL_TARGETS,
                        help="comma-separated: baseline, stomp, tidings")
    parser.add_argument("--cells", default="", help="regex on cell names, e.g. 'idle|r100$'")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true",
                        help="add to <profile>.jsonl instead of starting it anew; the report "
                        "keeps the latest record of each target and cell")
    parser.add_argument(
        "--tidings-workers", type=int, default=1,
        help="tidings processes per cell, at least (more are started when a cell's "
        "connections need them; personal cells always run on one)",
    )
    parser.add_argument(
        "--stomp-broker", choices=("private", "shared"), default="private",
        help="run Web-STOMP on a private RabbitMQ node with a raised open-file limit "
        "(default) or on the shared node's port 15674",
    )
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        jsonl = asyncio.run(_run(args))
    else:
        jsonl = uvloop.run(_run(args))
    for path in (jsonl, *write_reports(jsonl)):
        print(path)


if __name__ == "__main__":
    main()
