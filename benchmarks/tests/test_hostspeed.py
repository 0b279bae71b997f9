"""The host reference time and the commit a run records."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from benchmarks import hostspeed


def test_reference_is_the_best_of_its_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 0.120, 1.0, 1.080, 2.0, 2.095])
    monkeypatch.setattr(hostspeed.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(hostspeed, "_work", lambda: 0)
    assert hostspeed.reference_ms(repeat=3) == 80.0


def test_reference_work_is_real_and_deterministic() -> None:
    assert hostspeed._work() == hostspeed._work() > 0
    assert 0 < hostspeed.reference_ms(repeat=1) < 60_000


def test_code_version_names_a_commit() -> None:
    version = hostspeed.code_version()
    assert version == "unknown" or re.fullmatch(r"[0-9a-f]{7,}(-dirty)?", version)


def test_code_version_is_dirty_for_code_changes_not_for_results(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=tmp_path, check=True, capture_output=True)

    for name in ("src/a.py", "benchmarks/b.py", "benchmarks/results/r.md", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "one")
    clean = hostspeed.code_version(tmp_path / "benchmarks")
    assert re.fullmatch(r"[0-9a-f]{7,}", clean)
    (tmp_path / "benchmarks/results/r.md").write_text("2\n")
    (tmp_path / "README.md").write_text("2\n")
    assert hostspeed.code_version(tmp_path / "benchmarks") == clean
    (tmp_path / "src/a.py").write_text("2\n")
    assert hostspeed.code_version(tmp_path / "benchmarks") == clean + "-dirty"
    assert hostspeed.code_version(tmp_path / "nowhere") == "unknown"
