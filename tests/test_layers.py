"""The import graph of core/, screens/ and pbxtui/: no circles, and each layer imports only
what it may (the README's Layout section: core never imports screens, pbxtui or textual;
screens never touch sockets or SQL; core/sip imports only the standard library).

Every import counts, wherever it is written: at the top, inside a function (a lazy import
hides a circle, it does not remove it) or under `if TYPE_CHECKING:`. The checker itself is
tested first, on small graphs with a planted circle, so a rule that stops seeing anything
fails here instead of passing quietly.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "screens", "pbxtui")
STDLIB = frozenset(sys.stdlib_module_names)
# The store's row types live in a module of their own, without SQLite: what the console
# shows and the hot path carries.
ROWS_MODULE = "core.store.rows"

Graph = dict[str, set[str]]


# -- the checker ----------------------------------------------------------------------------
def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def parsed(source: str, filename: str) -> ast.Module:
    """`ast.parse`, asked twice if CPython 3.11 raises its spurious recursion-depth SystemError.

    CPython 3.11 (python/cpython#106905) sometimes fails an AST build with "AST constructor
    recursion depth mismatch" when other threads run meanwhile (the suite's aiosqlite threads);
    the same source parses on the next call.
    """
    try:
        return ast.parse(source, filename)
    except SystemError:
        return ast.parse(source, filename)


def imported_names(path: Path, module: str) -> set[str]:
    """Every module named by an import in `path`, as written (absolute, dotted)."""
    tree = parsed(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            names.add(origin)
            # `from core.sip import uri` names the module core.sip.uri.
            names.update(f"{origin}.{alias.name}" for alias in node.names)
    return names


def project_graph() -> tuple[Graph, dict[str, set[str]]]:
    """(edges between project modules, every name each module imports)."""
    paths = {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    raw = {module: imported_names(path, module) for module, path in paths.items()}
    graph: Graph = {
        module: {name for name in names if name in paths and name != module}
        for module, names in raw.items()
    }
    return graph, raw


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def reachable(graph: Graph, start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for successor in graph.get(todo.pop(), ()):
            if successor not in seen:
                seen.add(successor)
                todo.append(successor)
    return seen


def top(name: str) -> str:
    return name.partition(".")[0]


def violations(raw: dict[str, set[str]], module_pattern: str, forbidden: Iterable[str]) -> list:
    """(module, name) for each import by a module matching `module_pattern` of a name that
    is, or lies under, one of `forbidden`."""
    pattern = re.compile(module_pattern)
    banned = tuple(forbidden)
    return sorted(
        (module, name)
        for module, names in raw.items()
        if pattern.fullmatch(module)
        for name in names
        if any(name == item or name.startswith(item + ".") for item in banned)
    )


def compiled_modules() -> list[str]:
    """The hot path: the modules setup.py compiles with mypyc."""
    tree = parsed((ROOT / "setup.py").read_text(encoding="utf-8"), "setup.py")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) == "COMPILED_MODULES" for t in node.targets)
            and isinstance(node.value, ast.List)
        ):
            return [
                module_name(ROOT / element.value)
                for element in node.value.elts
                if isinstance(element, ast.Constant) and isinstance(element.value, str)
            ]
    raise AssertionError("setup.py has no COMPILED_MODULES list")


# -- the checker, checked -------------------------------------------------------------------
def test_the_checker_finds_a_planted_circle_and_only_that() -> None:
    graph: Graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert cycles({"x": {"y"}, "y": {"x"}, "p": {"q"}, "q": {"p"}}) == [["p", "q"], ["x", "y"]]


def test_the_checker_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from core.pbx import Pbx\n"
        "def later():\n    import pbxtui.app\n"
        "from . import sibling\n",
        encoding="utf-8",
    )
    names = imported_names(source, "core.cluster.mod")
    assert {"core.pbx", "pbxtui.app", "core.cluster.sibling"} <= names


def test_the_checker_finds_a_forbidden_import_and_what_reaches_one() -> None:
    raw = {"core.a": {"textual.app", "core.b"}, "core.b": {"aiosqlite"}, "screens.x": {"core.a"}}
    assert violations(raw, r"core(\..*)?", ["textual"]) == [("core.a", "textual.app")]
    assert violations(raw, r"screens(\..*)?", ["textual"]) == []
    graph: Graph = {"core.a": {"core.b"}, "core.b": set(), "screens.x": {"core.a"}}
    assert "core.b" in reachable(graph, "screens.x")


def test_the_project_graph_is_read() -> None:
    graph, raw = project_graph()
    assert "core.pbx" in graph and "core.route" in graph["core.assembly"]
    assert "aiosqlite" in raw["core.store.database"]


# -- the rules ------------------------------------------------------------------------------
def test_no_import_circles() -> None:
    graph, _raw = project_graph()
    assert cycles(graph) == []


def test_core_never_imports_the_console_or_the_cli() -> None:
    _graph, raw = project_graph()
    assert violations(raw, r"core(\..*)?", ["screens", "pbxtui", "textual", "rich"]) == []


def test_screens_use_the_core_public_api_only() -> None:
    """Rows to show, yes (data without SQL); the store, sockets and the CLI, never."""
    _graph, raw = project_graph()
    forbidden = ["pbxtui", "core.net.transport", "core.store", "socket", "aiosqlite", "sqlite3"]
    found = violations(raw, r"screens(\..*)?", forbidden)
    assert [(module, name) for module, name in found if not name.startswith(ROWS_MODULE)] == []


def test_the_sip_layer_imports_only_the_stdlib_and_itself() -> None:
    _graph, raw = project_graph()
    outside = sorted(
        (module, name)
        for module, names in raw.items()
        if module.startswith("core.sip")
        for name in names
        if top(name) != "__future__"
        and top(name) not in STDLIB
        and not (name == "core.sip" or name.startswith("core.sip."))
    )
    assert outside == []


def test_the_compiled_hot_path_never_reaches_aiosqlite() -> None:
    graph, raw = project_graph()
    offenders = {}
    for module in compiled_modules():
        assert module in graph, f"setup.py compiles {module}, which does not exist"
        reaching = sorted(
            found for found in reachable(graph, module) if "aiosqlite" in raw.get(found, ())
        )
        if reaching:
            offenders[module] = reaching
    assert offenders == {}
