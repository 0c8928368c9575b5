"""Imports flow one way: a module imports only modules of its own layer or a lower one, and no module imports one
that imports it back (directly or round a longer loop). Imports inside functions and under TYPE_CHECKING count:
they are dependencies all the same."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "viscon_dagster"

# lowest first: cli → demo → local → definitions → assets → automation → resources, checks → training → base → core
LAYERS: list[tuple[str, ...]] = [
    ("core",),                                              # the domain in plain Python, no Dagster
    ("settings", "paths", "gpu", "instance_policy"),         # facts every layer reads
    ("training",),                                          # its own process (Pipes): the domain, nothing of Dagster's
    ("partitions", "resources", "checks"),
    ("dead_runs", "automation"),
    ("assets",),
    ("environment", "definitions"),                         # the code location
    ("local",),                                             # running Dagster on this machine
    ("demo",),
    ("cli",),                                               # the command line, which nothing imports
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module → the package's modules it imports (an imported name that is a module counts as that module)."""
    def known(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("viscon_dagster") and known(target) != name:
                    edges[name].add(known(target))
    return edges


def layer(module: str) -> int:
    rest = module.split(".", 1)[1] if "." in module else ""
    for rank, prefixes in enumerate(LAYERS):
        if any(rest == p or rest.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for name in module_names():
        if name != "viscon_dagster":
            layer(name)


def test_no_module_imports_a_higher_layer():
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, bs in imports(module_names()).items() if a != "viscon_dagster"
              for b in sorted(bs) if b != "viscon_dagster" and layer(b) > layer(a)]
    assert upward == []


def test_no_two_modules_import_each_other():
    assert cycles(imports(module_names())) == []


def test_the_checks_see_an_upward_import_and_a_loop():
    """The rules above can fail: an upward import and a loop, planted."""
    edges = {"viscon_dagster.core.a": {"viscon_dagster.assets.b"}, "viscon_dagster.assets.b": {"viscon_dagster.core.a"}}
    assert layer("viscon_dagster.assets.b") > layer("viscon_dagster.core.a")
    assert cycles(edges) == [["viscon_dagster.assets.b", "viscon_dagster.core.a"]]
