"""How fast this host runs the harness's kind of Python: one figure to compare runs by.

Every record carries :func:`reference_ms`, the best of a few timings of fixed work like the
load generator's own (JSON, dicts, bytes), and :func:`code_version`, the commit measured: a
shared host's speed varies from session to session by more than any change to the code, so
runs compare only when their references are close.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson

__all__ = ["code_version", "reference_ms"]

_ROUNDS = 20_000


def _work() -> int:
    body: dict[str, object] = {"run": "tidings-reference", "pub": 0, "seq": 0,
                               "ts": 1_700_000_000_000_000_000, "user": None, "pad": ""}
    total = 0
    for i in range(_ROUNDS):
        body["seq"] = i
        data = orjson.dumps({"push": {"channel": "bench", "pub": {"data": body, "offset": i}}})
        total += orjson.loads(data)["push"]["pub"]["data"]["seq"] + len(data.split(b","))
    return total


def reference_ms(repeat: int = 9) -> float:
    """Milliseconds the reference work takes here, the best of ``repeat`` timings (lower is
    faster; the best, because a shared host only ever adds time)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        _work()
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def code_version(where: Path | None = None) -> str:
    """The commit measured, ``-dirty`` when the code differs from it (the server's or the
    harness's; results files left from an earlier run do not count), or "unknown" outside
    a git checkout. ``where``: a directory of the checkout (this file's by default)."""
    here = where or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", ":/src", ":/benchmarks",
                      ":(exclude,top)benchmarks/results")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if changed else commit or "unknown"
