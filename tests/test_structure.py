"""The shape of the package, checked: no import circle (function-level imports included:
a circle that holds only because an import hides inside a function is still a circle), no
function over ~60 lines and no class over ~300 lines in hpc_agent/.

``python tests/test_structure.py`` prints the import graph (module -> what it imports)."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hpc_agent"
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 300
# modules being rewritten on another branch (issue 7's LLM packages): checked once they land
NOT_YET: tuple[str, ...] = ()


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, except those under ``if TYPE_CHECKING:`` (never executed)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
        ):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def import_graph() -> dict[str, set[str]]:
    """Module -> the hpc_agent modules it imports (and the packages those live in)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in mods and t != name:
                    graph[name].add(t)
    # importing a module runs its packages' __init__ first: an edge to each, unless the package
    # itself imports the module, directly or through its other modules (the usual re-export:
    # the package triggers the module, not the other way round)
    explicit = {m: set(deps) for m, deps in graph.items()}
    for name in mods:
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in mods and name not in _reachable(explicit, parent):
                graph[name].add(parent)
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_functions_and_classes_are_small() -> None:
    too_long = []
    for name, path in modules().items():
        if name in NOT_YET:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                lines = (node.end_lineno or node.lineno) - node.lineno + 1  # decorators not counted
                if lines > limit:
                    too_long.append(f"{name}.{node.name}: {lines} lines (limit {limit})")
    assert too_long == []


def test_public_functions_and_classes_state_their_contract() -> None:
    """Every public module-level function and class has a docstring, and so has every public
    method (an override may inherit its base's: the contract is the seam's)."""
    undocumented = []
    for name, path in modules().items():
        if name in NOT_YET or name.endswith("__main__"):
            continue
        tree = ast.parse(path.read_text())
        public = [
            n
            for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")
        ]
        undocumented += [f"{name}.{n.name}" for n in public if not ast.get_docstring(n)]
        module = importlib.import_module(name)
        for node in public:
            cls = getattr(module, node.name, None)
            if not isinstance(node, ast.ClassDef) or not inspect.isclass(cls):
                continue
            fields = getattr(cls, "__dataclass_fields__", {})
            for attr, value in vars(cls).items():
                if attr.startswith("_") or attr in fields or not inspect.isfunction(value):
                    continue
                if not inspect.getdoc(getattr(cls, attr)):
                    undocumented.append(f"{name}.{node.name}.{attr}")
    assert undocumented == []


if __name__ == "__main__":
    for mod, deps in sorted(import_graph().items()):
        print(f"{mod} -> {', '.join(sorted(deps)) or '-'}")
