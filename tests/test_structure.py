"""The shape of the package, checked: the layer rules (which folder may import which, imports
under ``TYPE_CHECKING`` included), no import circle (function-level imports and imports under
``TYPE_CHECKING`` included: a circle that holds only because an import hides inside a function
or a type check is still a circle), at most a handful of modules at the package root, no
function over ~60 lines and no class over ~300 lines in hpc_agent/.

``python tests/test_structure.py`` prints the import graph (module -> what it imports)."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
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


def _imports(tree: ast.AST, *, type_checking: bool = False) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement; those under ``if TYPE_CHECKING:`` (never executed) only when
    ``type_checking``."""
    if not type_checking:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.If)
                and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
            ):
                node.body = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def import_graph(*, type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the hpc_agent modules it imports (and the packages those live in); with
    ``type_checking``, the imports made only for the type checker count too."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in _imports(ast.parse(path.read_text()), type_checking=type_checking):
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


# Circles that exist only through imports under TYPE_CHECKING, none since the two schedules are
# peers on one driver. A circle found here goes when its types move down a layer (a Protocol
# such as loop.live.LiveDriver), not by listing it.
KNOWN_TYPE_CHECKING_CIRCLES: list[list[str]] = []


def test_no_import_circles_counting_type_checking() -> None:
    assert cycles(import_graph(type_checking=True)) == KNOWN_TYPE_CHECKING_CIRCLES


# The layers: what each folder (or root module) may import from hpc_agent, besides itself.
# ``hpc_agent`` is the package's __init__ (the tracking API): every import of a module runs it.
IN_JOB = {"hpc_agent", "hpc_agent.errors", "hpc_agent.track", "hpc_agent.job"}
BELOW_THE_LOOP = {
    "hpc_agent.config",
    "hpc_agent.store",
    "hpc_agent.edits",
    "hpc_agent.science",
    "hpc_agent.llm",
    "hpc_agent.planners",
    "hpc_agent.executors",
}
LAYERS: dict[str, set[str]] = {
    # what runs inside a job: the standard library only, so that a job starts in milliseconds
    "hpc_agent.job": IN_JOB,
    "hpc_agent.track": IN_JOB,
    "hpc_agent.slurm_task": IN_JOB,
    "hpc_agent.errors": {"hpc_agent"},
    "hpc_agent.edits": {"hpc_agent", "hpc_agent.errors", "hpc_agent.config"},
    "hpc_agent.llm": {"hpc_agent", "hpc_agent.errors", "hpc_agent.config"},
    "hpc_agent.config": IN_JOB,
    "hpc_agent.store": IN_JOB | {"hpc_agent.config"},
    "hpc_agent.science": IN_JOB | {"hpc_agent.config", "hpc_agent.store", "hpc_agent.edits", "hpc_agent.llm"},
    "hpc_agent.executors": IN_JOB | {"hpc_agent.config", "hpc_agent.store"},
    "hpc_agent.planners": IN_JOB
    | {"hpc_agent.config", "hpc_agent.store", "hpc_agent.edits", "hpc_agent.science", "hpc_agent.llm"},
    # the loop drives the planners and the executors; it never imports the outputs
    "hpc_agent.loop": IN_JOB | BELOW_THE_LOOP,
    # the outputs only read results: everything but the CLI
    "hpc_agent.outputs": IN_JOB | BELOW_THE_LOOP | {"hpc_agent.loop"},
    # the live page reads results as the outputs do; it drives nothing (no loop)
    "hpc_agent.serve": IN_JOB
    | (BELOW_THE_LOOP - {"hpc_agent.planners", "hpc_agent.executors"})
    | {"hpc_agent.outputs"},
}
ROOT_MODULES = {
    "hpc_agent",
    "hpc_agent.__main__",
    "hpc_agent.errors",
    "hpc_agent.track",
    "hpc_agent.slurm_task",
}


def layer_of(module: str) -> str:
    """The folder (``hpc_agent.store``) or root module (``hpc_agent.track``) a module is in."""
    return ".".join(module.split(".")[:2])


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``module -> import`` for every import its layer's rule does not allow."""
    bad = []
    for module, deps in graph.items():
        rule = LAYERS.get(layer_of(module))
        if rule is None:
            continue  # cli/, testing/, __main__: may import anything
        for dep in deps:
            if layer_of(dep) != layer_of(module) and layer_of(dep) not in rule:
                bad.append(f"{module} -> {dep}")
    return sorted(bad)


def test_layer_rules_hold() -> None:
    assert layer_violations(import_graph(type_checking=True)) == []


def test_the_layer_rules_can_fail() -> None:
    """A store that imports the loop, in-job code that imports the store: both caught."""
    graph = {
        "hpc_agent.store.state": {"hpc_agent.loop.driver"},
        "hpc_agent.job.runner": {"hpc_agent.store.paths"},
        "hpc_agent.loop.driver": {"hpc_agent.outputs.status"},
        "hpc_agent.outputs.status": {"hpc_agent.science.budget"},
    }
    assert layer_violations(graph) == [
        "hpc_agent.job.runner -> hpc_agent.store.paths",
        "hpc_agent.loop.driver -> hpc_agent.outputs.status",
        "hpc_agent.store.state -> hpc_agent.loop.driver",
    ]


def test_every_module_has_a_layer_and_few_live_at_the_root() -> None:
    mods = set(modules())
    root = {m for m in mods if m.count(".") <= 1 and (PACKAGE / f"{m.split('.')[-1]}.py").exists()}
    assert root | {"hpc_agent"} <= ROOT_MODULES, f"new modules at the package root: {root - ROOT_MODULES}"
    folders = {layer_of(m) for m in mods} - ROOT_MODULES
    free = {"hpc_agent.cli", "hpc_agent.testing"}
    assert folders - free <= set(LAYERS), f"folders without a layer rule: {folders - free - set(LAYERS)}"


def test_in_job_code_imports_only_the_standard_library() -> None:
    """The in-job modules import no third-party package (checked on the source, all imports)."""
    allowed = set(sys.stdlib_module_names) | {"hpc_agent", "__future__"}
    bad = []
    for name, path in modules().items():
        if layer_of(name) not in ("hpc_agent.job", "hpc_agent.track", "hpc_agent.slurm_task"):
            continue
        for node in _imports(ast.parse(path.read_text()), type_checking=True):
            tops = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad += [f"{name}: {top}" for top in tops if top.split(".")[0] not in allowed and node.level == 0]
    assert bad == []


def test_every_folder_says_what_it_owns() -> None:
    """Each package's __init__ has a docstring that says what it owns and what it may import."""
    missing = [
        str(init.relative_to(PACKAGE.parent))
        for init in PACKAGE.rglob("__init__.py")
        if len(ast.get_docstring(ast.parse(init.read_text())) or "") < 80
    ]
    assert missing == []


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


# ------------------------------------------------------------------ tests that follow the packages
# Each public module of hpc_agent/ is imported by a test of its own folder: hpc_agent.loop.propose
# by a test module under tests/unit/loop/, a root module (hpc_agent.track) by one directly in
# tests/unit/. A package's __init__ counts as a module when it holds more than its docstring.
UNIT_TESTS = Path(__file__).resolve().parent / "unit"
# modules that are only entry points, each reached by the tests that name the reason
ENTRY_POINTS: dict[str, str] = {
    "hpc_agent.__main__": "`python -m hpc_agent`: calls the Click group, nothing else",
    "hpc_agent.testing.llama_server": "starts the real llama.cpp server (a model download): "
    "tests/test_llm_real.py runs it where scripts/test.sh installed it",
}


def imported_modules(source: str, known: set[str]) -> set[str]:
    """The hpc_agent modules a test module's source imports (``import a.b``, ``from a.b import
    c`` where ``c`` is a module or a name in ``a.b``), function-level imports included."""
    out: set[str] = set()
    for node in _imports(ast.parse(source), type_checking=True):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            # `from pkg import module` names the module; `from pkg import name` names pkg
            if node.module in known and len(subs) < len(node.names):
                out.add(node.module)
            out |= subs
    return out


def home_of(module: str) -> str:
    """The folder, relative to tests/unit/, whose tests must import ``module``: its first-level
    package's (``loop`` for ``hpc_agent.loop.propose``), ``""`` for a root module."""
    parts = module.split(".")
    is_package = (PACKAGE.parent.joinpath(*parts) / "__init__.py").exists()
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and is_package) else ""


def modules_without_their_tests(
    wanted: set[str], tests: dict[str, str], home: Callable[[str], str] = home_of
) -> list[str]:
    """The modules of ``wanted`` no test module of their home imports; ``tests`` maps a test's
    path relative to tests/unit/ (``loop/test_propose.py``) to its source."""
    found: dict[str, set[str]] = {}
    for rel, source in tests.items():
        folder = rel.split("/")[0] if "/" in rel else ""
        for module in imported_modules(source, wanted):
            found.setdefault(module, set()).add(folder)
    return sorted(m for m in wanted if home(m) not in found.get(m, set()))


def public_modules() -> set[str]:
    """Every module of hpc_agent/ with code (a package's __init__ only when it holds more than
    its docstring), none with a private name."""
    out = set()
    for name, path in modules().items():
        if any(part.startswith("_") and part != "__main__" for part in name.split(".")):
            continue
        body = ast.parse(path.read_text()).body
        if path.name == "__init__.py" and len(body) <= 1 + sum(
            isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in body
        ):
            continue  # a docstring (and `from __future__`) only
        out.add(name)
    return out


def test_every_public_module_has_a_test_of_its_own_package() -> None:
    tests = {str(p.relative_to(UNIT_TESTS)): p.read_text() for p in sorted(UNIT_TESTS.rglob("test_*.py"))}
    wanted = public_modules() - set(ENTRY_POINTS)
    assert modules_without_their_tests(wanted, tests) == []
    assert set(ENTRY_POINTS) <= set(modules()), "an entry point in ENTRY_POINTS no longer exists"


def test_the_module_test_check_can_fail() -> None:
    """A module imported only by a test of another folder, a module no test imports, a root
    module imported from a folder's test: all three caught; the right homes pass."""
    wanted = {"hpc_agent.loop.propose", "hpc_agent.loop.submit", "hpc_agent.track", "hpc_agent.store.paths"}
    tests = {
        "store/test_paths.py": "from hpc_agent.store.paths import X\nfrom hpc_agent.loop import propose",
        "loop/test_cancel.py": "import hpc_agent.track",
        "test_errors.py": "from hpc_agent import errors",
    }
    homes = {
        "hpc_agent.loop.propose": "loop",
        "hpc_agent.loop.submit": "loop",
        "hpc_agent.track": "",
        "hpc_agent.store.paths": "store",
    }
    missing = modules_without_their_tests(wanted, tests, homes.__getitem__)
    assert missing == ["hpc_agent.loop.propose", "hpc_agent.loop.submit", "hpc_agent.track"]
    tests["loop/test_propose.py"] = "def f():\n    from hpc_agent.loop.propose import x\n"
    tests["loop/test_submit.py"] = "import hpc_agent.loop.submit"
    tests["test_track.py"] = "from hpc_agent import track"
    assert modules_without_their_tests(wanted, tests, homes.__getitem__) == []
    assert home_of("hpc_agent.loop.propose") == "loop" and home_of("hpc_agent.track") == ""
    assert home_of("hpc_agent.planners.llm.schema") == "planners" and home_of("hpc_agent.store") == "store"


if __name__ == "__main__":
    for mod, deps in sorted(import_graph().items()):
        print(f"{mod} -> {', '.join(sorted(deps)) or '-'}")
