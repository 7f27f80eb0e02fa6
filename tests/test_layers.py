"""The package's layout: the speech pipeline at the top, sub-packages by concern, imports one way.

- The core (`jasper/*.py`) imports only the core.
- A sub-package imports the core, itself, and only the sub-packages below it in `SUBPACKAGES`.
- Entry points (`jasper.cli`, the package's lazy re-exports in `jasper/__init__.py`, the
  quickstart) may import anything.
- No import cycle, function-level imports included.

The module table of docs/architecture.md names each module's tier, so the document and the code
cannot drift apart: a module missing from the table, or listed under the wrong tier, fails here.
So do a top level of more than 16 modules and a module over 700 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "jasper"
ARCHITECTURE = REPO / "docs" / "architecture.md"
ROW = re.compile(r"^\| (\w+) \| `(jasper(?:\.\w+)*)` \|")
# Bottom to top: each may import the ones before it.
SUBPACKAGES = ["hub", "datasets", "lm", "training", "inference", "serving"]
ENTRY_POINTS = {"jasper", "jasper.cli"}
ENTRY_PACKAGES = {"quickstart"}
MAX_TOP_LEVEL_MODULES = 16
MAX_LINES = 700


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
            # `from jasper import config` imports the module jasper.config, not the package's names
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                for alias in node.names
            ]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, known) - {name} for name, path in files.items()}


def documented_tiers() -> dict[str, str]:
    table = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        if match := ROW.match(line):
            table[match.group(2)] = match.group(1)
    return table


def tier(module: str) -> str:
    """`core`, `entry`, or the name of the sub-package that holds `module`."""
    parts = module.split(".")
    if module in ENTRY_POINTS or parts[1] in ENTRY_PACKAGES:
        return "entry"
    is_subpackage = len(parts) > 2 or (PACKAGE / parts[1]).is_dir()
    return parts[1] if is_subpackage else "core"


def may_import(importer: str, imported: str) -> bool:
    if importer == "entry" or importer == imported or imported == "core":
        return True
    if importer == "core" or imported == "entry":
        return False
    return SUBPACKAGES.index(imported) < SUBPACKAGES.index(importer)


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
        "from jasper import config\nimport jasper.text\n\n"
        "def f():\n    from jasper.lm.tool import find_tool\n    from jasper import __version__\n"
    )
    known = {"jasper", "jasper.config", "jasper.text", "jasper.lm.tool", "jasper.audio"}
    assert imported_modules(source, known) == {"jasper", "jasper.config", "jasper.text", "jasper.lm.tool"}


def test_a_submodule_imported_from_its_package_is_not_the_package(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from jasper import config\n")
    assert imported_modules(source, {"jasper", "jasper.config"}) == {"jasper.config"}


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_every_module_is_in_the_architecture_table_under_its_tier() -> None:
    if not ARCHITECTURE.is_file():
        pytest.fail(f"{ARCHITECTURE} is missing: it holds the module table this test checks")
    table, modules = documented_tiers(), set(import_graph())
    unlisted, stale = sorted(modules - set(table)), sorted(set(table) - modules)
    assert not unlisted, f"add these modules to the table of {ARCHITECTURE}: {unlisted}"
    assert not stale, f"{ARCHITECTURE} lists modules that do not exist: {stale}"
    wrong = [
        f"{m}: table says {table[m]}, its place says {tier(m)}"
        for m in sorted(modules)
        if table[m] != tier(m)
    ]
    assert not wrong, f"{ARCHITECTURE}: " + "; ".join(wrong)


def test_every_subpackage_is_ordered() -> None:
    found = {tier(m) for m in import_graph()} - {"core", "entry"}
    assert found <= set(SUBPACKAGES), (
        f"place these sub-packages in SUBPACKAGES: {sorted(found - set(SUBPACKAGES))}"
    )


def test_may_import_follows_the_order() -> None:
    assert may_import("training", "core") and may_import("training", "lm") and may_import("entry", "serving")
    assert not may_import("core", "lm") and not may_import("lm", "training")
    assert not may_import("training", "inference") and not may_import("serving", "entry")


def test_imports_run_from_entry_points_down_to_the_core() -> None:
    wrong = [
        f"{module} ({tier(module)}) imports {target} ({tier(target)})"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if not may_import(tier(module), tier(target))
    ]
    assert not wrong, "imports against the layering:\n  " + "\n  ".join(wrong)


def test_the_top_level_stays_small_and_modules_short() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top of jasper/: {top}"
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"
