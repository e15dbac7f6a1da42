"""The package's layers point one way: the CLI on top, nothing below imports it, no import cycles.

Imports are read with `ast` from every module under bench/ (those inside functions too: a lazy
import is still a dependency). Imports under `if TYPE_CHECKING:` never run, but they still say
which layer a module leans on: they may not close a circle either.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import time_limit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bench"
# The program's entry points may import the CLI: `python -m bench` is one, `python -m bench.docs` (which
# renders every command's --help into docs/) another.
ENTRY_POINTS = {"bench.__main__", "bench.docs"}
# The units that must not import each other in a circle (a package counts as one unit).
UNITS = ("bench.config", "bench.run_config", "bench.data", "bench.models", "bench.techniques", "bench.step",
         "bench.train", "bench.metrics", "bench.evaluator", "bench.tracking", "bench.experiment", "bench.studies",
         "bench.report", "bench.analysis", "bench.perf", "bench.reproduce", "bench.ui", "bench.cli", "bench.errors",
         "bench.plots", "bench.progress")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, name: str | None = None, type_checking: bool = False) -> set[str]:
    """Every `bench...` module a file imports at run time (`from bench.x import y` counts as bench.x.y
    when bench/x/y.py exists, else bench.x); with `type_checking`, those under `if TYPE_CHECKING:` too.
    `name`: the module the file is (default: from its path)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node) and not type_checking:
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


def graph(type_checking: bool = False) -> dict[str, set[str]]:
    return {name: imports_of(path, type_checking=type_checking) for name, path in all_modules().items()}


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
    """The reader itself: a function-level import counts, a TYPE_CHECKING one only when asked."""
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.run_config import RunConfig\n"
                     "import bench.data\ndef f():\n    from bench.cli import main\n    from . import layers\n")
    runtime = {"bench.data", "bench.cli", "bench.models", "bench.models.layers"}
    assert imports_of(probe, "bench.models.probe") == runtime
    assert imports_of(probe, "bench.models.probe", type_checking=True) == runtime | {"bench.run_config"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_nothing_below_the_cli_imports_it():
    offenders = sorted(f"{name} imports {', '.join(sorted(m for m in deps if unit_of(m) == 'bench.cli'))}"
                       for name, deps in graph().items()
                       if unit_of(name) != "bench.cli" and name not in ENTRY_POINTS
                       and any(unit_of(m) == "bench.cli" for m in deps))
    assert not offenders, "library modules import the CLI:\n" + "\n".join(offenders)


def unit_edges(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, deps in imports.items():
        src = unit_of(name)
        if src is not None:
            edges.setdefault(src, set()).update(u for u in map(unit_of, deps) if u and u != src)
    return edges


@pytest.mark.parametrize("type_checking", [False, True], ids=["run-time", "with-TYPE_CHECKING"])
def test_no_import_cycle_between_units(type_checking):
    """Packages as single nodes (a package's __init__ importing its own submodules is fine). A type-only
    import counts too: a hint that points back up says the layers are tangled, even if it never runs."""
    edges = unit_edges(graph(type_checking))
    assert find_cycle(edges) is None, f"import cycle between units: {' -> '.join(find_cycle(edges))}"


def test_the_cycle_check_fails_on_a_type_only_import_that_closes_a_circle(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.run_config import RunConfig\n")
    imports = graph(type_checking=True)
    imports["bench.config.probe"] = imports_of(probe, "bench.models.probe", type_checking=True)
    assert find_cycle(unit_edges(imports)) is not None  # config -> run_config -> config


def test_no_import_cycle_between_modules():
    """Module by module, each package's __init__ left out (it re-exports its submodules by design)."""
    modules = all_modules()
    init_of = {name for name, path in modules.items() if path.name == "__init__.py"}
    edges = {name: {d for d in deps if d not in init_of} for name, deps in graph().items() if name not in init_of}
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


@pytest.mark.parametrize("module,forbidden", [
    ("bench.config", ("torch", "bench.models", "bench.techniques", "bench.run_config")),  # typed data only
    ("bench.models", ("bench.run_config", "bench.techniques", "bench.step")),  # nets know no technique
    ("bench.techniques", ("bench.run_config", "bench.step", "bench.train")),  # below the step that calls them
    ("bench.errors", ("bench.config", "pydantic")),
])
def test_importing_a_low_layer_loads_nothing_above_it(module, forbidden):
    code = (f"import sys, {module}\n"
            f"print('\\n'.join(m for m in sys.modules if m.startswith({forbidden!r})))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=time_limit(60))
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert not loaded, f"import {module} loaded {loaded}"


CONFIG_MAY_IMPORT = {"bench.errors"}  # and the standard library and pydantic


def test_config_imports_no_registry_and_no_torch():
    """bench/config.py describes the static sections: importing a registry (or torch) there, even lazily
    inside a function, would put the typed-data layer above what it describes."""
    path = PACKAGE / "config.py"
    assert imports_of(path, type_checking=True) <= CONFIG_MAY_IMPORT
    third_party = {n.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
                   for n in ([a.name for a in node.names] if isinstance(node, ast.Import) else
                             [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])}
    assert not third_party & {"torch", "numpy", "mlflow", "optuna"}, third_party


def private_uses(path: Path, name: str | None = None) -> list[str]:
    """`from bench.x import _y` and `x._y` on another bench module, in one file (dunders are public)."""
    name = name or module_name(path)
    modules = all_modules()
    tree = ast.parse(path.read_text(), str(path))
    private = lambda n: n.startswith("_") and not n.startswith("__")  # noqa: E731
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("bench"):
            for a in node.names:
                if private(a.name) and node.module != name:
                    found.append(f"{name}: from {node.module} import {a.name}")
                if f"{node.module}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("bench"):
                    aliases[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            base = _dotted(node.value, aliases)
            if base in modules and base != name:
                found.append(f"{name}: {base}.{node.attr}")
    return found


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def test_no_module_uses_another_module_s_private_names():
    offenders = [use for name, path in all_modules().items() for use in private_uses(path, name)]
    assert not offenders, "private names used across modules:\n" + "\n".join(offenders)


def test_the_private_name_check_can_fail(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from bench.data import _read\nfrom bench import data\nimport bench.data as d\n"
                     "data._require(1)\nd._check(2)\n")
    assert private_uses(probe, "bench.perf.probe") == [
        "bench.perf.probe: from bench.data import _read", "bench.perf.probe: bench.data._require",
        "bench.perf.probe: bench.data._check"]


# ---------------------------------------------------------------------------
# Errors come from bench.errors only

def error_imports_elsewhere(path: Path) -> list[str]:
    """`from X import SomeError` with X not bench.errors, and `module.SomeError` reached through another
    module (bench.errors' classes, read from the module itself)."""
    import bench.errors

    names = set(bench.errors.__all__)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module != "bench.errors":
            found += [f"{path.name}:{node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if a.name in names]
        elif isinstance(node, ast.Attribute) and node.attr in names and ast.unparse(node.value) != "bench.errors":
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_errors_are_imported_from_bench_errors_only():
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    offenders = [use for path in files for use in error_imports_elsewhere(path)]
    assert not offenders, "errors reached through another module:\n" + "\n".join(offenders)


def test_the_error_import_check_can_fail(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from bench.config import ConfigError\nfrom bench.errors import DataError\nimport bench.errors\n"
                     "from bench import report\nreport.ReportError\nbench.errors.StudyError\n")
    assert error_imports_elsewhere(probe) == ["probe.py:1: from bench.config import ConfigError",
                                              "probe.py:5: report.ReportError"]
