"""The layering of ``src/meddiff`` as a test: an import graph read from the sources (AST, imports
inside functions included), checked against the rules of the layers and for cycles.

Layers (arrows point down only)::

    cli -> api (+ demo) -> tasks -> methods -> {core, physics, consistency, nets, zoo, data, eval}
    train -> {core, data, nets, zoo};  base: errors, config, device (and the package root)

A rule ``a -/-> b`` forbids any import of a module of part ``b`` from a module of part ``a``.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "meddiff"

#: top-level modules -> their part; packages are their own part (meddiff.core.* -> "core")
MODULE_PARTS = {PACKAGE: "base", f"{PACKAGE}.errors": "base", f"{PACKAGE}.config": "base",
                f"{PACKAGE}.device": "base", f"{PACKAGE}.api": "api", f"{PACKAGE}.demo": "api"}
PACKAGE_PARTS = {"core", "physics", "consistency", "nets", "data", "zoo", "train", "methods",
                 "eval", "tasks", "cli"}
PARTS = set(MODULE_PARTS.values()) | PACKAGE_PARTS

#: part -> the parts it must never import, and why
NEVER: dict[str, tuple[set[str], str]] = {
    "base": (PARTS - {"base"}, "the base knows no layer above it"),
    "core": ({"physics", "methods"}, "the core is modality-agnostic and knows no paper"),
    "physics": ({"core", "methods"}, "operators know no diffusion and no paper"),
    "methods": ({"tasks", "cli", "train"}, "methods know no task, no CLI, no trainer"),
    "data": ({"methods"}, "data knows no method"),
    "nets": ({"methods"}, "networks know no method"),
    "zoo": ({"train"}, "the store needs no trainer"),
    "tasks": ({"cli"}, "a task knows no CLI"),
    "api": ({"cli", "train"}, "the inference API knows no CLI and no trainer"),
    "eval": ({"methods"}, "metrics know no method"),
}
#: only the API layer and the CLI may import the API; only the CLI imports the CLI
TOP = {"api": {"api", "cli"}, "cli": {"cli"}}
#: the CLI goes through the API: what it may import, and the trainer lazily from the train verb
CLI_ALLOWED = {PACKAGE, f"{PACKAGE}.errors", f"{PACKAGE}.api"}
CLI_LAZY_ALLOWED = {(f"{PACKAGE}.cli.train", f"{PACKAGE}.train.run")}


@dataclass(frozen=True)
class Edge:
    source: str   # importing module
    target: str   # imported meddiff module
    line: int
    lazy: bool    # inside a function
    typing: bool  # inside ``if TYPE_CHECKING:`` (no runtime import)

    def __str__(self) -> str:
        where = " (lazy)" if self.lazy else " (TYPE_CHECKING)" if self.typing else ""
        return f"{self.source}:{self.line} -> {self.target}{where}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def discover(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package under ``root``: dotted name -> file."""
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool,
             known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: resolve against the importing package
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]


def imports(modules: dict[str, Path]) -> list[Edge]:
    """Every import of a package module by a package module, with its context."""
    known = set(modules)
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_pkg = path.name == "__init__.py"

        def visit(node: ast.AST, lazy: bool, typing: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(child, module, is_pkg, known):
                        if target == PACKAGE or target.startswith(PACKAGE + "."):
                            edges.append(Edge(module, target, child.lineno, lazy, typing))
                elif isinstance(child, ast.Constant) and child.value in known:
                    # a module named in a string is imported by name (importlib): a lazy edge
                    edges.append(Edge(module, child.value, child.lineno, True, typing))
                inner_lazy = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                        ast.Lambda))
                inner_typing = typing or (isinstance(child, ast.If) and _is_type_checking(child))
                visit(child, inner_lazy, inner_typing)

        visit(tree, False, False)
    return list(dict.fromkeys(edges))  # one edge per import line and target


def part_of(module: str) -> str | None:
    if module in MODULE_PARTS:
        return MODULE_PARTS[module]
    head = module.split(".")[1] if module.count(".") >= 1 else ""
    return head if head in PACKAGE_PARTS else None


def violations(edges: list[Edge]) -> list[str]:
    """Every import that breaks a rule, as ``source:line -> target: rule``."""
    bad = []
    for e in edges:
        src, dst = part_of(e.source), part_of(e.target)
        if src is None or dst is None or src == dst:
            continue
        if src in NEVER and dst in NEVER[src][0]:
            bad.append(f"{e}: {src} -/-> {dst} ({NEVER[src][1]})")
        elif dst in TOP and src not in TOP[dst]:
            bad.append(f"{e}: {src} -/-> {dst} (nothing below it imports the {dst})")
        elif src == "cli" and dst != "cli" and e.target not in CLI_ALLOWED and not (
                e.lazy and (e.source, e.target) in CLI_LAZY_ALLOWED):
            bad.append(f"{e}: cli -/-> {dst} (the CLI imports only meddiff.api, meddiff.errors "
                       "and, lazily in the train verb, meddiff.train.run)")
    return bad


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The import cycles between modules (runtime imports, lazy ones included), one per
    strongly connected component, each as a closed path ``[a, b, ..., a]``."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if not e.typing and e.source != e.target:
            graph.setdefault(e.source, set()).add(e.target)
            graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan 1972
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
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
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_closed_path(graph, set(c)) for c in components]


def _closed_path(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (BFS)."""
    start = min(comp)
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")  # unreachable for a component


# ------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def graph():
    modules = discover()
    return modules, imports(modules)


def test_every_module_belongs_to_a_part(graph):
    modules, _ = graph
    assert [m for m in modules if part_of(m) is None] == []


def test_no_import_breaks_a_layer_rule(graph):
    bad = violations(graph[1])
    assert not bad, "imports that break the layering:\n" + "\n".join(bad)


def test_no_import_cycle(graph):
    found = cycles(graph[1])
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_finds_a_lazy_upward_import_and_a_cycle(tmp_path):
    """The rules and the cycle search on a made-up package: a lazy core -> physics import, a
    cycle closed by a relative and a lazy import, a typing-only import (no cycle), the CLI's
    allowed and forbidden imports."""
    _write(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "core/__init__.py": "",
        "core/a.py": "from . import b\ndef f():\n    from meddiff.physics.op import A\n    return A\n",
        "core/b.py": "def g():\n    from meddiff.core.a import f\n    return f\n",
        "physics/__init__.py": "",
        "physics/op.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from meddiff.physics import tool\nA = 1\n",
        "physics/tool.py": "from meddiff.physics.op import A\n",
        "cli/__init__.py": "from meddiff import api, errors\n",
        "cli/train.py": "def run():\n    import meddiff.train.run\n",
        "cli/sample.py": "from meddiff.tasks import prior\n",
        "api.py": "from meddiff.core.a import f\n",
        "tasks/__init__.py": "", "tasks/prior.py": "",
        "train/__init__.py": "", "train/run.py": "",
    })
    edges = imports(discover(tmp_path))
    assert Edge("meddiff.core.a", "meddiff.physics.op", 3, True, False) in edges
    bad = violations(edges)
    assert len(bad) == 2, bad
    assert bad[0].startswith("meddiff.cli.sample:1 -> meddiff.tasks.prior: cli -/-> tasks")
    assert bad[1].startswith("meddiff.core.a:3 -> meddiff.physics.op (lazy): core -/-> physics")
    assert cycles(edges) == [["meddiff.core.a", "meddiff.core.b", "meddiff.core.a"]]
