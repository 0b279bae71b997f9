"""The host reference time and the commit a run records."""

from __future__ import annotations

import re

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
