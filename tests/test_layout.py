"""The house rules of embedlib/ (docs/stabilization.md's module table, STYLE): checked on the
source, so a change that breaks one fails here."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "embedlib"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` imports, at module level or inside a function (a
    deferred import hides a circle, it does not remove it)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join(name.split(".")[:-node.level] + [node.module])
            out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            out |= {base} if base in known else set()
    return out - {name}


def test_no_function_longer_than_80_lines():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_no_module_longer_than_500_lines():
    long = [f"{p.relative_to(ROOT)} ({n})" for p in modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, long


def test_linalg_is_driver_maths_only():
    names = imported("embedlib.linalg", PACKAGE / "linalg.py", set(modules()))
    tops = set()
    for node in ast.walk(ast.parse((PACKAGE / "linalg.py").read_text())):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            tops.add(node.module.split(".")[0])
    assert not tops & {"pyspark", "pyarrow"}, tops
    assert names <= {"embedlib.errors"}, names


def test_no_import_circle():
    known = modules()
    graph = {name: imported(name, path, set(known)) for name, path in known.items()}
    # A package's __init__ importing its submodules is not a circle of ideas.
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_reference_outside_the_repository():
    """The library and its docs never point at the workspace beside the repository."""
    hits = [f"{p.relative_to(ROOT)}:{i}" for folder in ("embedlib", "docs") for p in (ROOT / folder).rglob("*")
            if p.suffix in (".py", ".md") for i, line in enumerate(p.read_text().splitlines(), 1)
            if "../shared" in line]
    assert not hits, hits
