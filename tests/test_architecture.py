"""The package's shape, so that a wrong structure fails here rather than in a review: no import
cycle among roloraexp's modules, the training core never imports the reporting wing, the table
query (what training asks of the table declarations) stays light, and no module is over 400 lines.

The import graph is read from the source with ``ast``: every ``import`` counts, at module level or
inside a function (a lazy import still ties the modules together, it only hides the tie until the
function runs). A package's ``__init__`` is a module of its own; ``from pkg import name`` is an
edge to the submodule ``pkg.name`` when there is one, else to ``pkg``.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from functools import cache
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "roloraexp"
REPORTING = "roloraexp.reporting"
# `python -m roloraexp.report / .figures / .dashboard` stay as they were; these modules only forward
# to the reporting wing, and belong to it.
FORWARDING = ("roloraexp.report", "roloraexp.figures", "roloraexp.dashboard")
QUERY = "roloraexp.tables.query"
TABLE_TOOLS = (*(f"roloraexp.tables.{m}" for m in ("cli", "cost", "sweep", "__main__")),
               "roloraexp.sweeps", "roloraexp.sweeps.table_grid", "roloraexp.sweeps.summary")
MAX_LINES = 400


def in_reporting(module: str) -> bool:
    return module == REPORTING or module.startswith(REPORTING + ".") or module in FORWARDING


@cache
def modules() -> dict[str, Path]:
    """{dotted module name: file} of every roloraexp/**/*.py."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _known(name: str) -> str | None:
    """The roloraexp module `name` is, or is in (``roloraexp.tables.TABLES`` → ``roloraexp.tables``)."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> dict[str, int]:
    """{imported name, absolute: first line} of every import statement in `module`, roloraexp or not."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            # `from pkg import sub` imports the submodule; `from pkg import name` only pkg.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base for alias in node.names]
        else:
            continue
        for name in names:
            found.setdefault(name, node.lineno)
    return found


@cache
def graph() -> dict[str, frozenset[str]]:
    """{module: the roloraexp modules it imports}."""
    return {m: frozenset(t for name in imports_of(m) if (t := _known(name)) and t != m) for m in modules()}


def cycles(g: dict[str, frozenset[str]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) per strongly connected group."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm; the graph is a few hundred modules, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v), on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w), group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(g):
        if v not in index:
            visit(v)
    found = []
    for group in groups:
        start = min(group)
        path = shortest_path(g, start, lambda m, start=start: start in g[m], within=group)
        found.append(path + [start])
    return found


def shortest_path(g, start: str, goal, within=None) -> list[str] | None:
    """The shortest import chain from `start` to a module for which `goal(module)` holds, or None."""
    came_from, queue = {start: None}, deque([start])
    while queue:
        m = queue.popleft()
        if goal(m):
            path = []
            while m is not None:
                path.append(m)
                m = came_from[m]
            return path[::-1]
        for nxt in sorted(g[m]):
            if nxt not in came_from and (within is None or nxt in within):
                came_from[nxt] = m
                queue.append(nxt)
    return None


def loaded_by(imports: list[str]) -> list[str]:
    """The modules a fresh interpreter loads to import `imports` (those it starts with left out)."""
    script = ("import importlib, json, sys\nbefore = set(sys.modules)\n"
              f"for m in {imports!r}:\n    importlib.import_module(m)\n"
              "print(json.dumps(sorted(set(sys.modules) - before)))")
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])


def core_modules() -> list[str]:
    return sorted(m for m in modules() if not in_reporting(m))


def test_the_graph_sees_relative_and_function_level_imports():
    """The reader itself: the Tracker's lazy heatmap import and a relative one are edges."""
    assert "roloraexp.heatmaps" in graph()["roloraexp.tracking"]
    assert QUERY in graph()["roloraexp.tracking"]
    assert "roloraexp.tables.spec" in graph()["roloraexp.tables"]
    toy = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert cycles(toy) == [["a", "b", "c", "a"]]


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles among roloraexp modules:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_core_never_imports_reporting_in_its_source():
    """Statically, over every path: a function-level import deep in the core counts too."""
    leaks = [path for m in core_modules() if (path := shortest_path(graph(), m, in_reporting))]
    assert not leaks, "core modules that reach the reporting wing:\n" + "\n".join(" -> ".join(p) for p in leaks)


def test_importing_the_core_loads_no_reporting_module():
    """For real, in a fresh interpreter: every core module (training, tracking, heatmaps, the table
    declarations, export, ...) imported, and not one reporting module among what got loaded."""
    loaded = loaded_by([m for m in core_modules() if not m.endswith(".__main__")])  # scripts: they run on import
    assert {"roloraexp.run", "roloraexp.train", "roloraexp.tracking", "roloraexp.heatmaps"} <= set(loaded)
    assert not [m for m in loaded if in_reporting(m)]


def _allowed_in_query(name: str) -> bool:
    top = name.partition(".")[0]
    if top == "roloraexp":
        return name == "roloraexp.errors" or name == "roloraexp.tables" or name.startswith("roloraexp.tables.")
    return top in sys.stdlib_module_names or top == "__future__"


def test_the_table_query_imports_only_the_standard_library_errors_and_the_declarations():
    bad = {name: line for name, line in imports_of(QUERY).items() if not _allowed_in_query(name)}
    assert not bad, f"roloraexp/tables/query.py imports {bad} (name: line)"
    # What its imports reach: the declarations, never the table tools (whose sweep and cost estimate
    # import the training core).
    reached = shortest_path(graph(), QUERY, lambda m: not _allowed_in_query(m) or m in TABLE_TOOLS)
    assert reached is None, " -> ".join(reached)


def test_importing_the_table_query_loads_no_third_party_module():
    """The Tracker imports it in every run: it must cost nothing, whatever the declarations import."""
    loaded = loaded_by([QUERY])
    assert QUERY in loaded
    assert not [m for m in loaded if not _allowed_in_query(m) and m != "roloraexp"], loaded


def test_no_module_is_over_400_lines():
    lengths = {m: len(path.read_text().splitlines()) for m, path in modules().items()}
    over = {m: n for m, n in sorted(lengths.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them): {over}"


def test_run_is_composition_only():
    """roloraexp.run.run() reads top to bottom: the steps are named functions, each in its place."""
    import ast

    tree = ast.parse((PACKAGE / "run.py").read_text())
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    assert run.end_lineno - run.lineno + 1 <= 60
