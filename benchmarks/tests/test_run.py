"""The run's order: cell by cell, every target in turn; an unavailable target's cells are
recorded as skipped."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import run
from benchmarks.profiles import Cell
from benchmarks.targets import TargetUnavailable


class _Target:
    def __init__(self, name: str, available: bool = True) -> None:
        self.name = name
        self.available = available
        self.closed = False

    def prepare(self) -> None:
        if not self.available:
            raise TargetUnavailable("not installed")

    def close(self) -> None:
        self.closed = True


def test_cells_run_one_by_one_on_every_target_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = [Cell("broadcast", 10, 5, 1), Cell("broadcast", 10, 10, 1),
             Cell("idle", 10, 0, 1, ("b",)), Cell("broadcast", 10, 20, 1)]
    targets = {"a": _Target("a"), "b": _Target("b"), "c": _Target("c", available=False)}
    order: list[tuple[str, str]] = []

    async def fake_cell(target: Any, cell: Cell, ip_slot: int) -> dict[str, Any]:
        order.append((cell.name, target.name))
        return {"target": target.name, "cell": cell.name, "status": "ok", "slot": ip_slot}

    monkeypatch.setitem(run.PROFILES, "test", cells)
    monkeypatch.setattr(run, "make_target", lambda name, *_: targets[name])
    monkeypatch.setattr(run, "run_cell", fake_cell)
    monkeypatch.setattr(run, "reference_ms", lambda: 55.0)
    monkeypatch.setattr(run, "code_version", lambda: "abc1234")
    real_sleep = asyncio.sleep
    monkeypatch.setattr(run.asyncio, "sleep", lambda _s: real_sleep(0))
    args = argparse.Namespace(profile="test", cells="", targets="a,b,c", amqp_url="amqp://x",
                              stomp_broker="private", tidings_workers=1, out=tmp_path,
                              append=False)
    jsonl = asyncio.run(run._run(args))

    assert order == [("broadcast-n10-r5", "a"), ("broadcast-n10-r5", "b"),
                     ("broadcast-n10-r10", "b"), ("broadcast-n10-r10", "a"),
                     ("idle-n10", "b"),
                     ("broadcast-n10-r20", "b"), ("broadcast-n10-r20", "a")]
    records = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    skipped = [r for r in records if r["status"] == "skipped"]
    assert [r["cell"] for r in skipped] == ["broadcast-n10-r5", "broadcast-n10-r10",
                                            "broadcast-n10-r20"]
    assert all(r["target"] == "c" and "not installed" in r["note"] for r in skipped)
    measured = [r for r in records if r["status"] == "ok"]
    assert all(r["commit"] == "abc1234" and r["host_ref_ms"] == 55.0 for r in measured)
    # Every record, skipped ones too, says how to measure it again.
    assert {r["command"] for r in records} == {
        "python -m benchmarks.run --profile test --targets a,b,c"}
    assert len({r["slot"] for r in measured}) == len(measured)  # fresh addresses each time
    assert targets["a"].closed and targets["b"].closed and not targets["c"].closed


def test_the_command_names_only_what_differs_from_the_defaults() -> None:
    def args(**changes: Any) -> argparse.Namespace:
        values: dict[str, Any] = {"profile": "targets", "targets": run.ALL_TARGETS, "cells": "",
                                  "tidings_workers": 1, "stomp_broker": "private",
                                  "append": True, "out": Path("/tmp/x")}
        return argparse.Namespace(**(values | changes))

    assert run.command(args()) == "python -m benchmarks.run --profile targets"
    assert run.command(args(targets="tidings", cells="broadcast-n1000-r800$",
                            tidings_workers=2)) == (
        "python -m benchmarks.run --profile targets --targets tidings "
        "--cells 'broadcast-n1000-r800$' --tidings-workers 2")
