"""The package's imports run one way: layers below tools, tools below the entry points, no cycle.

The tiers come from the module table of docs/architecture.md, so the document and the code cannot
drift apart: a module missing from the table, a layer that imports a tool, a tool that imports
another tool, or any import cycle (function-level imports included) fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "jasper"
ARCHITECTURE = REPO / "docs" / "architecture.md"
ROW = re.compile(r"^\| (layer|tool|entry) \| `(jasper(?:\.\w+)*)` \|")
# What each tier may import: a layer only layers, a tool only layers, an entry point anything.
ALLOWED = {"layer": {"layer"}, "tool": {"layer"}, "entry": {"layer", "tool", "entry"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports anywhere in its body (functions and TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from jasper import config` imports the module jasper.config
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, known) - {name} for name, path in files.items()}


def tiers() -> dict[str, str]:
    table = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        if match := ROW.match(line):
            table[match.group(2)] = match.group(1)
    return table


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y"}}) == ["y", "y"]


def test_function_level_and_from_imports_are_seen(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from jasper import config\nimport jasper.text\n\ndef f():\n    from jasper.lm import find_tool\n"
    )
    known = {"jasper", "jasper.config", "jasper.text", "jasper.lm", "jasper.audio"}
    assert imported_modules(source, known) == {"jasper", "jasper.config", "jasper.text", "jasper.lm"}


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_every_module_is_in_the_architecture_table() -> None:
    if not ARCHITECTURE.is_file():
        pytest.fail(f"{ARCHITECTURE} is missing: it holds the module table this test checks")
    table, modules = tiers(), set(import_graph())
    unlisted, stale = sorted(modules - set(table)), sorted(set(table) - modules)
    assert not unlisted, f"add these modules to the table of {ARCHITECTURE}: {unlisted}"
    assert not stale, f"{ARCHITECTURE} lists modules that do not exist: {stale}"


def test_imports_run_from_tools_down_to_layers() -> None:
    table = tiers()
    wrong = [
        f"{module} ({table[module]}) imports {target} ({table[target]})"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if module in table and target in table and table[target] not in ALLOWED[table[module]]
    ]
    assert not wrong, "imports against the layering:\n  " + "\n  ".join(wrong)
