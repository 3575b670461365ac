"""The package's import graph: layers only import downwards and no modules import each other.

Every ``import``/``from ... import`` of the package's own modules counts, also those inside
functions (a lazy import is still a dependency). Layers, from the bottom:

errors & files -> metrics, config, targets -> backend -> rewards -> tasks -> search -> baselines ->
results, reports and run dirs -> runner -> launcher -> entry points.

A task never imports a search method, a metric never imports a task, the backend never imports
search or tasks.
"""

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO

PKG = REPO / "specdifftree"

#: top-level module or subpackage of specdifftree -> layer (lower = more basic)
LAYERS = {
    "errors": 0, "faults": 0, "flags": 0, "atomic": 0, "version": 0, "gcpause": 0,
    "metrics": 1, "config": 1, "answers": 1, "targets": 1,
    "backend": 2,
    "rewards": 3,
    "tasks": 4,
    "search": 5,
    "baselines": 6,
    "results": 7, "rollouts": 7, "anytime": 7, "report_table": 7, "report_paired": 7,
    "rundir": 8, "preflight": 8, "modelcache": 8, "console": 8, "report": 8,
    "loggers": 9, "solvers": 9,
    "runner": 10,
    "launcher": 11,
    "__main__": 12, "__init__": 12,
}


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(REPO).with_suffix("").parts)
        out[".".join(parts)] = f
    return out


def _target(mod: str, path: Path, node: ast.ImportFrom, known) -> list[str]:
    pkg = mod.split(".")[:-1]
    base = pkg[: len(pkg) - node.level + 1] if node.level else []
    name = ".".join(base + (node.module.split(".") if node.module else [])) if node.level \
        else (node.module or "")
    out = []
    for alias in node.names:
        full = f"{name}.{alias.name}"
        for cand in (full, full + ".__init__", name, name + ".__init__"):
            if cand in known:
                out.append(cand)
                break
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                targets = _target(mod, path, node, known)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name in known]
            graph[mod].update(t for t in targets if t != mod)
    return graph


def layer(mod: str) -> int:
    part = mod.split(".")[1]
    assert part in LAYERS, f"{mod}: add specdifftree.{part} to a layer in LAYERS"
    return LAYERS[part]


def cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan). A package's
    ``__init__`` re-exporting its modules is not a cycle."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w.endswith("__init__"):
                continue
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

    for v in list(graph):
        if v not in index and not v.endswith("__init__"):
            visit(v)
    return out


def test_the_graph_is_read():
    g = import_graph()
    assert "specdifftree.search.dts" in g["specdifftree.runner"] or any(
        t.startswith("specdifftree.search") for t in g["specdifftree.runner"])
    assert "specdifftree.errors" in g["specdifftree.search.base"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_layers_only_import_downwards():
    bad = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
           for a, targets in sorted(import_graph().items()) for b in sorted(targets)
           if layer(b) > layer(a)]
    assert bad == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}) == [
        ["p.a", "p.b", "p.c"]]


def test_the_version_is_the_one_pyproject_states():
    import tomllib

    from specdifftree import __version__

    with open(REPO / "pyproject.toml", "rb") as f:
        assert tomllib.load(f)["project"]["version"] == __version__
