"""The rules the package's layout keeps (docs/architecture.md), checked on its source: the import
graph has no circle (imports under TYPE_CHECKING and inside functions included), no module is over
500 lines and no function over 80, the engine never imports the playground or the front ends, and the
planner does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "deployer"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
FRONT_ENDS = {"deployer.console", "deployer.tasks", "deployer.dispatch", "deployer.cli", "deployer.completion"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The package's modules that `name` imports, wherever the import statement is."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_a_circle():
    """The check below can fail: a graph with a circle through a type-only import is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_circle():
    assert GRAPH["deployer.fleet"], "the import graph was read"
    assert circles(GRAPH) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_holds_at_most_500_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{MODULES[name]} has {lines} lines"


def test_no_function_is_over_80_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_the_engine_never_imports_the_playground_or_a_front_end():
    """The engine (everything but the playground, the front ends and what only they use) works
    without the fleets to try it on; `api.py` is the engine's face for other programs."""
    outside = {name for name in MODULES if name.startswith("deployer.playground")} | FRONT_ENDS
    engine = [name for name in MODULES if name not in outside and name != "deployer"]
    wrong = {name: sorted(GRAPH[name] & outside) for name in engine if GRAPH[name] & outside}
    assert wrong == {}


def test_the_planner_does_no_io():
    """`plan/` is pure: it imports no connection, script runner, lock, operation or phase."""
    acting = ("deployer.fleet", "deployer.connection", "deployer.scripts", "deployer.lock", "deployer.operations")
    acting += ("deployer.phases", "deployer.playground", "subprocess", "socket", "paramiko", "fabric")
    for name, path in MODULES.items():
        if name.startswith("deployer.plan"):
            text = ast.parse(path.read_text())
            names = {alias.name for node in ast.walk(text) if isinstance(node, ast.Import) for alias in node.names}
            names |= {node.module or "" for node in ast.walk(text) if isinstance(node, ast.ImportFrom)}
            assert not {n for n in names | GRAPH[name] if n.startswith(acting)}, name


def test_the_inventory_is_a_description_that_depends_on_nothing_that_acts():
    """`inventory/` (what the fleet is) imports only itself and the error tree: not signing, scripts
    or connections (it once did, through signing's size limits, and closed a circle of nine)."""
    for name in MODULES:
        if name.startswith("deployer.inventory"):
            outside = {target for target in GRAPH[name] if not target.startswith("deployer.inventory")}
            assert outside <= {"deployer.errors"}, name
