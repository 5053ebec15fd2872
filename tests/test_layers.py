"""The house has floors: every import points down, and no files import each other in a loop.

    datagen (runs, bench, pairs export, API facade, CLI)       top
    generators | students | metrics                            middle
    datagen_core (records, errors, sources, sandbox, ...)      foundation

``students`` and ``metrics`` may use ``generators`` (a student is evaluated as a backend, a
judge is a backend), never each other and never the top; nothing imports the CLI. Imports
inside functions count: a lazy import is still an arrow. Imports for annotations only
(``if TYPE_CHECKING:``) count for the floors but not for cycles: they never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datagen_core", "generators", "students", "metrics", "datagen")
ALLOWED = {
    "datagen_core": {"datagen_core"},
    "generators": {"datagen_core", "generators"},
    "students": {"datagen_core", "generators", "students"},
    "metrics": {"datagen_core", "generators", "metrics"},
    "datagen": set(PACKAGES),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _typing_only(tree: ast.Module) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:``: names for annotations, never run."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports_of(path: Path, root: Path, modules: set[str], typing: bool = True) -> set[str]:
    """The project modules a file imports (``from a import b`` counts b when it is a module);
    without ``typing``, leaving out imports made for annotations only."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    skip = set() if typing else _typing_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def project_graph(root: Path = ROOT, typing: bool = True) -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")]
    modules = {module_name(p, root) for p in files}
    return {module_name(p, root): imports_of(p, root, modules, typing) for p in files}


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        top = mod.split(".")[0]
        for dep in sorted(deps):
            if dep.split(".")[0] not in ALLOWED[top]:
                bad.append(f"{mod} -> {dep} (upward: {top} may not import {dep.split('.')[0]})")
            if (dep == "datagen.cli" or dep.startswith("datagen.cli.")) and not mod.startswith(
                    "datagen.cli"):
                bad.append(f"{mod} -> {dep} (nothing imports the CLI)")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    pkg: dict[str, set[str]] = defaultdict(set)
    for mod, deps in graph.items():
        for dep in deps:
            if dep.split(".")[0] != mod.split(".")[0]:
                pkg[mod.split(".")[0]].add(dep.split(".")[0])
    return cycles(dict(pkg))


def test_every_import_points_down() -> None:
    assert violations(project_graph()) == []


def test_no_import_cycles() -> None:
    graph = project_graph(typing=False)  # an annotation-only import runs nothing
    assert cycles(graph) == []
    assert package_cycles(graph) == []


@pytest.mark.parametrize(("importer", "line"), [
    ("datagen_core/planted.py", "from generators.engine import Engine"),
    ("generators/planted.py", "import metrics.store"),
    ("students/planted.py", "def f():\n    from metrics.store import Store\n"),
    ("metrics/planted.py", "from students import records"),
    ("generators/planted.py", "from datagen.cli.console import err"),
])
def test_a_planted_upward_import_is_caught(tmp_path: Path, importer: str, line: str) -> None:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for mod in ("generators/engine.py", "metrics/store.py", "students/records.py",
                "datagen/cli/__init__.py", "datagen/cli/console.py"):
        (tmp_path / mod).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / mod).write_text("")
    assert violations(project_graph(tmp_path)) == []
    (tmp_path / importer).write_text(line + "\n")
    assert violations(project_graph(tmp_path)) != []


def test_a_planted_cycle_is_caught() -> None:
    graph = {"generators.a": {"generators.b"}, "generators.b": {"generators.a"}}
    assert cycles(graph) == [["generators.a", "generators.b"]]
