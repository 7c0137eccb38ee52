"""engine/'s rooms: no import cycles between its modules, and the README's Layout names every room."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

ENGINE = ROOT / "engine"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in ENGINE.rglob("*.py")}


def _targets(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> set[str]:
    """The engine modules an import statement loads (``from . import x`` is the submodule x when there is one)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1] if node.level else []
    target = ".".join(base + (node.module.split(".") if node.module else []))
    found = {f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names}
    return {t for t in found if t in MODULES and t != module}


def import_graph(with_lazy: bool) -> dict[str, set[str]]:
    """Module → the engine modules it imports: at import time only, or also inside functions (``with_lazy``)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = ast.walk(tree) if with_lazy else tree.body
        graph[module] = set().union(*(_targets(module, path.name == "__init__.py", n) for n in nodes
                                      if isinstance(n, (ast.Import, ast.ImportFrom))))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that import each other, directly or around a loop (Tarjan's components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("with_lazy", [False, True], ids=["at-import", "also-in-functions"])
def test_no_import_cycles_in_engine(with_lazy):
    graph = import_graph(with_lazy)
    assert len(graph) >= 30 and sum(map(len, graph.values())) >= 50  # the parse found the modules and imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_readme_layout_names_every_room_and_every_core_module():
    layout = (ROOT / "README.md").read_text(encoding="utf-8").split("## Layout", 1)[1]
    rooms = sorted(p.parent.relative_to(ROOT).as_posix() for p in ENGINE.glob("*/__init__.py"))
    assert {"engine/backends", "engine/cuda", "engine/stream", "engine/serve", "engine/eval"} <= set(rooms)
    assert not [r for r in rooms if f"`{r}/`" not in layout], "rooms the README's Layout lacks"
    core = sorted(p.stem for p in ENGINE.glob("*.py") if not p.stem.startswith("_"))
    row = re.search(r"^\| `engine/` \|(.*)$", layout, re.M).group(1)
    assert not [m for m in core if f"`{m}`" not in row], "core modules the README's engine/ row lacks"
