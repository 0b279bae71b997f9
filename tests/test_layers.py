"""The package's layers: every import of ``src/tidings`` goes down or sideways, never up.

A module may import modules of its own layer or of the layers below it. The layers are
those of ``docs/architecture.md``; a new module must be placed in one (by its name or a
subpackage's name, the longest one deciding; ``tidings`` itself names only the package's
``__init__``). Every import counts, including those inside
functions and under ``TYPE_CHECKING``: an import deferred to dodge a cycle is still a
dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "tidings"

#: Bottom first. Each layer: its name, then the modules and packages in it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "tidings",
            "tidings.codes",
            "tidings.errors",
            "tidings.collector",
            "tidings.metrics",
            "tidings.timers",
            "tidings.flusher",
        ),
    ),
    ("wire formats", ("tidings.protocol", "tidings.publication")),
    (
        "what flows",
        (
            "tidings.record",
            "tidings.log.base",
            "tidings.ledger",
            "tidings.subscription",
            "tidings.commands",
            "tidings.clientinfo",
            "tidings.control_messages",
            "tidings.presence",
            "tidings.events",
        ),
    ),
    (
        "rules",
        (
            "tidings.router",
            "tidings.topic",
            "tidings.config",
            "tidings.channels",
            "tidings.auth",
            "tidings.lifecycle",
            "tidings.webpush.vapid",
            "tidings.webpush.subscription",
            "tidings.webpush.message",
            "tidings.receipts",
        ),
    ),
    (
        "protocol core",
        (
            "tidings.protocol.host",
            "tidings.protocol.core",
            "tidings.protocol.queries",
            "tidings.protocol.subscribing",
            "tidings.protocol.connect",
            "tidings.protocol.calls",
            "tidings.protocol.session",
        ),
    ),
    ("state", ("tidings.history", "tidings.hub")),
    ("log", ("tidings.log",)),
    ("backend", ("tidings.proxy", "tidings.webpush")),
    (
        "node",
        (
            "tidings.node",
            "tidings.admission",
            "tidings.announcements",
            "tidings.reports",
            "tidings.publishing",
            "tidings.server_commands",
            "tidings.recoveries",
            "tidings.recovery",
            "tidings.push_feed",
            "tidings.receipt_calls",
        ),
    ),
    (
        "edges",
        ("tidings.appkeys", "tidings.transport", "tidings.api", "tidings.demo", "tidings.cluster"),
    ),
    ("process", ("tidings.server", "tidings.cli")),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted((SRC / "tidings").rglob("*.py"))}


def layer_of(module: str) -> int:
    """The index of the layer whose longest entry names ``module`` or a package of it."""
    best, depth = -1, -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            within = entry != ROOT and module.startswith(entry + ".")
            if (module == entry or within) and len(entry) > depth:
                best, depth = index, len(entry)
    if best < 0:
        raise LookupError(f"{module} is in no layer: place it in LAYERS and the docs")
    return best


def imports(module: str, path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every tidings module that ``module`` imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tidings":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "tidings":
                continue
            for alias in node.names:
                # ``from tidings.protocol import codec`` imports the module tidings.protocol.codec.
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in known else base


def edges() -> list[tuple[str, int, str]]:
    found = modules()
    known = set(found)
    return [
        (module, line, target)
        for module, path in found.items()
        for line, target in imports(module, path, known)
        if target != module
    ]


def test_every_module_is_in_a_layer() -> None:
    unplaced = []
    for module in modules():
        try:
            layer_of(module)
        except LookupError as exc:
            unplaced.append(str(exc))
    assert not unplaced


def test_every_layer_entry_names_a_module_or_package() -> None:
    known = set(modules())
    stale = [entry for _, entries in LAYERS for entry in entries if entry not in known]
    assert not stale, f"entries naming nothing: {stale}"


def test_no_import_goes_up_a_layer() -> None:
    upward = [
        f"{module}:{line} imports {target} "
        f"({LAYERS[layer_of(module)][0]} -> {LAYERS[layer_of(target)][0]})"
        for module, line, target in edges()
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "\n".join(upward)


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> what it imports), or None."""
    done: set[str] = set()

    def visit(path: list[str]) -> list[str] | None:
        for target in sorted(graph.get(path[-1], ())):
            if target in path:
                return [*path[path.index(target) :], target]
            if target not in done:
                found = visit([*path, target])
                if found is not None:
                    return found
        done.add(path[-1])
        return None

    for module in sorted(graph):
        if module not in done:
            found = visit([module])
            if found is not None:
                return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = {module: set() for module in modules()}
    for module, _, target in edges():
        graph[module].add(target)
    cycle = cycle_in(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


# ---------------------------------------------------------------------- the checker itself
def test_the_checker_sees_every_form_of_import(tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text(
        "import tidings.hub\n"
        "from tidings.protocol import codec, messages\n"
        "from tidings import node\n"
        "from tidings.history import History\n"
        "from . import router\n"
        "from .protocol.wsframes import Opcode\n"
        "import orjson\n"
        "def later() -> None:\n"
        "    from tidings.server import run\n"
        "if False:\n"
        "    import tidings.cli as cli\n"
    )
    known = set(modules())
    # ast.walk visits breadth first, so compare as sets.
    assert {target for _, target in imports("tidings.probe", path, known)} == {
        "tidings.hub",
        "tidings.protocol.codec",
        "tidings.protocol.messages",
        "tidings.node",
        "tidings.history",
        "tidings.router",
        "tidings.protocol.wsframes",
        "tidings.server",
        "tidings.cli",
    }


def test_a_cycle_is_found_and_a_diamond_is_not_one() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"a"}}) == ["a", "a"]
    assert cycle_in({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_the_longest_entry_decides_the_layer() -> None:
    names = [name for name, _ in LAYERS]
    assert names[layer_of("tidings.protocol.session")] == "protocol core"
    assert names[layer_of("tidings.protocol.codec")] == "wire formats"
    assert names[layer_of("tidings.log.base")] == "what flows"
    assert names[layer_of("tidings.log.rabbitmq")] == "log"
    assert names[layer_of("tidings.config")] == "rules"  # the package's __init__
    assert names[layer_of("tidings.config.validate")] == "rules"
    with pytest.raises(LookupError):
        layer_of("elsewhere")
    with pytest.raises(LookupError):  # a new top-level module is placed by hand
        layer_of("tidings.newcomer")


def test_the_protocol_core_sits_below_the_state_it_must_not_import() -> None:
    session = layer_of("tidings.protocol.session")
    assert layer_of("tidings.hub") > session
    assert layer_of("tidings.history") > session
    assert layer_of("tidings.transport.sse") > layer_of("tidings.node") > layer_of("tidings.hub")
