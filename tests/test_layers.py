"""The package layering: no import cycles, and no package importing one above it.

Every ``import`` in every module of ``src/larpixdaq`` counts, wherever it is written: at the
top, inside a function (a lazy import is still a dependency, only a later one), or under
``if TYPE_CHECKING``. The table :data:`MAY_IMPORT` is the layering docs/architecture.md shows;
a module in a package (or top-level module) the table does not name fails the test, so a new
package has to be placed in the picture.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "larpixdaq"

_BASE = {"errors"}
#: Which of our packages (or top-level modules) each may import, besides itself. Read from
#: the bottom up: the detector geometry is plain data; formats knows nothing of the DAQ;
#: boards speak formats; run control speaks formats; routines drive boards; the pipeline is
#: components (run control) moving board data (boards, formats) and running routines; the
#: web UI is an operator; commands start any of them; the dispatcher ``cli`` sits on top.
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "version": set(),
    "processes": set(),
    "geometry": set(),
    "formats": _BASE | {"geometry"},
    "boards": _BASE | {"formats", "geometry"},
    "runcontrol": _BASE | {"formats", "processes"},
    "routines": _BASE | {"formats", "geometry", "boards", "runcontrol"},
    "pipeline": _BASE | {"formats", "geometry", "boards", "runcontrol", "routines",
                         "processes"},
    "web": _BASE | {"formats", "geometry", "boards", "runcontrol"},
    "supervisor": {"processes"},
    "convert": _BASE | {"formats", "version"},
    "inspect": _BASE | {"formats"},
    "demo": _BASE | {"formats"},
    "commands": _BASE | {"version", "geometry", "formats", "boards", "runcontrol", "routines",
                         "pipeline", "web", "processes", "supervisor", "convert", "inspect",
                         "demo"},
    "cli": _BASE | {"version", "commands"},
    # The package itself: ``larpixdaq.Operator`` (lazily) and ``larpixdaq.__version__``.
    ROOT: {"version", "runcontrol"},
}

#: Inside ``commands``, modules share helpers only through these (never each other).
COMMANDS_SHARED = {f"{ROOT}.commands", f"{ROOT}.commands.common"}


def module_names(src: Path, root: str = ROOT) -> dict[str, Path]:
    """Every module of the package under ``src`` by dotted name (a package by its own name)."""
    out = {}
    for path in sorted((src / root).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: Iterable[str], root: str = ROOT) -> set[str]:
    """The modules of ours that module ``name`` imports anywhere in its body.

    ``from P import x`` is an import of ``P.x`` when that is a module, else of ``P``;
    relative imports are resolved against the module's package.
    """
    known = set(modules)
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target == root or target.startswith(root + "."):
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    found.add(target)
    return found


def import_graph(src: Path, root: str = ROOT) -> dict[str, set[str]]:
    modules = module_names(src, root)
    return {name: imports_of(name, path, modules, root) for name, path in modules.items()}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def unit_of(module: str, root: str = ROOT) -> str:
    """The layer a module belongs to: its top-level package or module under ``root``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else root


def layering_violations(graph: Mapping[str, set[str]], table: Mapping[str, set[str]],
                        root: str = ROOT) -> list[str]:
    out = []
    for module, deps in sorted(graph.items()):
        unit = unit_of(module, root)
        if unit not in table:
            out.append(f"{module}: its package {unit!r} is not in the layering table")
            continue
        for dep in sorted(deps):
            dep_unit = unit_of(dep, root)
            if dep_unit != unit and dep_unit not in table[unit]:
                out.append(f"{module} imports {dep}: {unit} may not import {dep_unit}")
    return out


# --- the project -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(SRC)


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_every_import_follows_the_layering(graph):
    assert layering_violations(graph, MAY_IMPORT) == []


def test_the_layering_itself_has_no_cycle():
    assert cycles(MAY_IMPORT) == []
    assert all(dep in MAY_IMPORT for deps in MAY_IMPORT.values() for dep in deps)


def test_commands_share_helpers_only_through_common(graph):
    wrong = [f"{m} imports {d}" for m, deps in sorted(graph.items())
             if m.startswith(f"{ROOT}.commands.")
             for d in sorted(deps)
             if d.startswith(f"{ROOT}.commands") and d not in COMMANDS_SHARED]
    assert wrong == []


def test_the_pipeline_holds_only_the_data_path(graph):
    # Both ends of the control protocol are run control's; nothing there needs the pipeline.
    assert f"{ROOT}.pipeline.component" not in graph
    assert f"{ROOT}.runcontrol.component" in graph


def _reachable(graph: Mapping[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_operator_stands_alone(graph):
    # A client of the core: the wire messages, keys and addresses, never the server side.
    needs = _reachable(graph, f"{ROOT}.runcontrol.operator")
    server = {f"{ROOT}.runcontrol.{m}" for m in ("core", "rundb", "component", "statemachine")}
    assert needs & server == set()
    assert f"{ROOT}.runcontrol.messages" in needs


# --- the checker itself, on packages made for the purpose ----------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_cycle_through_a_lazy_import_is_found(tmp_path):
    src = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "def f():\n    from pkg.high import b\n    return b\n",
        "high/__init__.py": "",
        "high/b.py": "from ..low import a\n",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.low.a"] == {"pkg.high.b"} and graph["pkg.high.b"] == {"pkg.low.a"}
    assert cycles(graph) == [["pkg.high.b", "pkg.low.a"]]
    table = {"low": set(), "high": {"low"}, "pkg": set()}
    assert layering_violations(graph, table, "pkg") == [
        "pkg.low.a imports pkg.high.b: low may not import high"]


def test_from_package_import_module_is_an_import_of_the_module(tmp_path):
    src = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/c.py": "X = 1\n",
        "low/d.py": "from pkg.low import c\nfrom pkg.low.c import X\nimport pkg.extra.e\n",
        "extra/__init__.py": "",
        "extra/e.py": "",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.low.d"] == {"pkg.low.c", "pkg.extra.e"}
    table = {"low": set(), "pkg": set()}
    assert layering_violations(graph, table, "pkg") == [
        "pkg.extra: its package 'extra' is not in the layering table",
        "pkg.extra.e: its package 'extra' is not in the layering table",
        "pkg.low.d imports pkg.extra.e: low may not import extra",
    ]
