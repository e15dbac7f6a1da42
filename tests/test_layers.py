"""The package's layers point one way: the CLI on top, nothing below imports it, no import cycles.

Imports are read with `ast` from every module under bench/ (those inside functions too: a lazy
import is still a dependency). Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bench"
# The program's entry points may import the CLI: `python -m bench` is one.
ENTRY_POINTS = {"bench.__main__"}
# The units that must not import each other in a circle (a package counts as one unit).
UNITS = ("bench.config", "bench.data", "bench.models", "bench.techniques", "bench.train", "bench.metrics",
         "bench.evaluator", "bench.tracking", "bench.experiment", "bench.studies", "bench.report",
         "bench.analysis", "bench.perf", "bench.reproduce", "bench.ui", "bench.cli", "bench.errors")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """Every `bench...` module a file imports at run time (`from bench.x import y` counts as bench.x.y
    when bench/x/y.py exists, else bench.x). `name`: the module the file is (default: from its path)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            for a in node.names:
                found.add(f"{mod}.{a.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    modules = all_modules()
    return {m for m in found if m in modules and m != name}


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path) for name, path in all_modules().items()}


def unit_of(module: str) -> str | None:
    return next((u for u in UNITS if module == u or module.startswith(u + ".")), None)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_the_import_reader_sees_lazy_relative_and_type_only_imports(tmp_path):
    """The reader itself: a function-level import counts, a TYPE_CHECKING one does not."""
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.config import RunConfig\n"
                     "import bench.data\ndef f():\n    from bench.cli import main\n    from . import layers\n")
    assert imports_of(probe, "bench.models.probe") == {"bench.data", "bench.cli", "bench.models", "bench.models.layers"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_nothing_below_the_cli_imports_it():
    offenders = sorted(f"{name} imports {', '.join(sorted(m for m in deps if unit_of(m) == 'bench.cli'))}"
                       for name, deps in graph().items()
                       if unit_of(name) != "bench.cli" and name not in ENTRY_POINTS
                       and any(unit_of(m) == "bench.cli" for m in deps))
    assert not offenders, "library modules import the CLI:\n" + "\n".join(offenders)


def test_no_import_cycle_between_units():
    """Packages as single nodes (a package's __init__ importing its own submodules is fine)."""
    edges: dict[str, set[str]] = {}
    for name, deps in graph().items():
        src = unit_of(name)
        if src is None:
            continue
        edges.setdefault(src, set()).update(u for u in map(unit_of, deps) if u and u != src)
    assert find_cycle(edges) is None, f"import cycle between units: {' -> '.join(find_cycle(edges))}"


def test_no_import_cycle_between_modules():
    """Module by module, each package's __init__ left out (it re-exports its submodules by design)."""
    modules = all_modules()
    init_of = {name for name, path in modules.items() if path.name == "__init__.py"}
    edges = {name: {d for d in deps if d not in init_of} for name, deps in graph().items() if name not in init_of}
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


@pytest.mark.parametrize("module,forbidden", [
    ("bench.config", ("bench.models",)),  # techniques declare config keys, so config loads them (and torch)
    ("bench.models", ("bench.config",)),  # models need the config classes for type hints only
    ("bench.errors", ("bench.config", "pydantic")),
])
def test_importing_a_low_layer_loads_nothing_above_it(module, forbidden):
    code = (f"import sys, {module}\n"
            f"print('\\n'.join(m for m in sys.modules if m.startswith({forbidden!r})))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert not loaded, f"import {module} loaded {loaded}"
