"""The report's page says how to measure it again."""

from __future__ import annotations

from typing import Any

from benchmarks.report import markdown


def _row(target: str, cell: str, **kw: Any) -> dict[str, Any]:
    return {"target": target, "cell": cell, "workload": "broadcast", "connections": 10,
            "rate": 1.0, "offered": 10.0, "status": "ok", **kw}


def test_the_page_opens_with_the_command_of_its_records() -> None:
    command = "python -m benchmarks.run --profile targets"
    page = markdown([_row("tidings", "a", command=command),
                     _row("baseline", "a", command=command)], "t")
    assert f"Reproduce: `{command}`." in page
    assert page.index("Reproduce:") < page.index("## Targets")


def test_appended_runs_are_named_in_order() -> None:
    page = markdown([_row("tidings", "a", command="python -m benchmarks.run --profile quick"),
                     _row("tidings", "b", command="python -m benchmarks.run --profile quick "
                          "--cells b")], "t")
    assert ("Reproduce: `python -m benchmarks.run --profile quick`, then "
            "`python -m benchmarks.run --profile quick --cells b --append`.") in page


def test_records_without_a_command_print_none() -> None:
    assert "Reproduce" not in markdown([_row("tidings", "a")], "t")
