"""The import graph of `ssl_bench/`: layers point down, so no module imports one that imports it back.

Built from the source with `ast`, without importing anything. Every `import` and `from … import` counts, at
module level and inside functions alike (a function-local import that closes a circle is still a circle).
An edge goes to the deepest module of `ssl_bench` an import names: `from ssl_bench import records` ->
`ssl_bench.records`, `from ssl_bench.data import get_dataset` -> `ssl_bench.data` (the package's
`__init__`); relative imports are resolved. The parent packages that Python initializes on the way are not
edges (every module would otherwise import `ssl_bench`, which imports them back). Names resolved at run time
(the registries' "module:attribute" tables and entry points) are not imports.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

PACKAGE = "ssl_bench"
ROOT = Path(__file__).resolve().parents[1]
PLUGINS = "ssl_bench_plugins"  # the built-in methods: found through the method registry, never imported
# The layers, top down; every other module (the top level of the package, data/, models/) is below them all.
LAYERS = ("ssl_bench.cli", "ssl_bench.sweeps", "ssl_bench.reporting", "ssl_bench.run")
# Imports that point up, by name: the protocol checks its precision and world size with the run's definitions.
UPWARD = {("ssl_bench.protocol", "ssl_bench.run.distributed"), ("ssl_bench.protocol", "ssl_bench.run.precision")}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> list[str]:
    """The dotted names that `module`'s imports name (a `from X import y` names `X.y`, which may be a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"] or [base]
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (and any `ssl_bench_plugins…` name it imports)."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(module, path):
            if name.split(".")[0] == PLUGINS:
                targets.add(".".join(name.split(".")[:2]))  # the plugin's module
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest circle through each strongly connected part of `graph` that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    parts: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the package is far too small to need it iterative
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                parts.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [shortest_circle(graph, part) for part in parts]


def shortest_circle(graph: dict[str, set[str]], part: list[str]) -> list[str]:
    """The shortest way from `part[0]` back to itself within `part` (breadth first)."""
    start, members = part[0], set(part)
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if w not in came_from:
                came_from[w] = v
                queue.append(w)
    raise AssertionError(f"{part} has no circle")


def test_the_graph_is_read():
    graph = import_graph()
    assert "ssl_bench.data.registry" in graph["ssl_bench.data"]  # a package importing its own module
    assert "ssl_bench.records" in graph["ssl_bench.sweeps.sweep"]  # from ssl_bench import records
    assert "ssl_bench.data" in graph["ssl_bench.run.preparation"]  # from ssl_bench.data import …
    assert "ssl_bench.runlock" in graph["ssl_bench.sweeps.slurm"]
    assert "ssl_bench.run.training" in graph["ssl_bench.sweeps.sweep_run"]  # sub-packages are read too
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def layer(module: str) -> int:
    """The index of `module`'s layer in LAYERS (0 is the top); below them all: len(LAYERS)."""
    return next((i for i, top in enumerate(LAYERS) if module == top or module.startswith(top + ".")), len(LAYERS))


def test_layers_point_down():
    graph = import_graph()
    up = sorted(
        f"{m} -> {t}"
        for m, ts in graph.items()
        for t in ts
        if t in graph and layer(t) < layer(m) and (m, t) not in UPWARD
    )
    assert not up, f"imports that point up the layers {' > '.join(LAYERS)} > the rest: {up}"


def test_no_module_of_the_package_imports_the_plugins():
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts if t.split(".")[0] == PLUGINS)
    assert not offenders, f"ssl_bench/ imports {PLUGINS} (load a method with ssl_bench.method.load_method): {offenders}"
