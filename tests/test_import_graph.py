"""The modules of src/videoprune import each other without cycles.

Two graphs: the imports that run when a module is imported (module level, outside
``if TYPE_CHECKING``), and those plus the deferred ones inside functions, where an arrow that
runs both ways is still a loop in the design even though Python resolves it at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import videoprune

PACKAGE = Path(videoprune.__file__).parent

#: modules that import another module's underscore names (none left: the shared pieces have public names)
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = set()

#: loops another change removes, each as one (module, module) pair of it (none left)
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_names() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__.py)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.Module, deferred: bool) -> list[ast.Import | ast.ImportFrom]:
    """The module's imports outside ``if TYPE_CHECKING`` blocks; those inside functions only if ``deferred``."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not deferred:
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


def imported_modules(name: str, path: Path, modules: dict[str, Path], deferred: bool) -> set[str]:
    """The package's modules that module ``name`` imports directly."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in import_nodes(ast.parse(path.read_text(), str(path)), deferred):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        out.update(t for t in targets if t in modules and t != name)
    return out


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports (``deferred``: counting imports inside functions too)."""
    modules = module_names()
    return {name: imported_modules(name, path, modules, deferred) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), as sorted name lists."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_graph_sees_module_level_imports_and_deferred_ones_only_when_asked():
    """patch -> llm is a module-level arrow; patch -> stts.hf (inside patch()) is in the deferred graph only."""
    graph, full = import_graph(), import_graph(deferred=True)
    assert "videoprune.llm" in graph["videoprune.patch"]
    assert "videoprune.stts.hf" not in graph["videoprune.patch"]
    assert "videoprune.stts.hf" in full["videoprune.patch"]
    assert "videoprune.llm" in graph["videoprune.stts.hf"]


def test_cycle_finder_finds_a_planted_loop():
    """A three-module loop is reported as one group; a chain is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("deferred", [False, True], ids=["module-level", "with-deferred"])
def test_no_import_cycles_among_package_modules(deferred):
    """No module of src/videoprune imports a module that (transitively) imports it back."""
    graph = import_graph(deferred)
    for pair in KNOWN_CYCLES:
        a, b = sorted(pair)
        graph[a] = graph[a] - {b}
        graph[b] = graph[b] - {a}
    assert find_cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    """No module of src/videoprune imports an underscore name from another (the shared pieces have public names)."""
    found = set()
    for name, path in module_names().items():
        for node in import_nodes(ast.parse(path.read_text(), str(path)), deferred=True):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                found |= {(name, a.name) for a in node.names if a.name.startswith("_") and not a.name.startswith("__")}
    assert found - KNOWN_PRIVATE_IMPORTS == set()


def test_registry_imports_every_family_module_statically():
    """Every family module the registry lists is a module-level edge of registry.py (no importlib string hides one)."""
    from videoprune.models import registry

    edges = import_graph()["videoprune.models.registry"]
    listed = {m.__name__ for m in registry.FAMILY_MODULES}
    assert len(listed) == len(registry.FAMILIES)
    assert listed <= edges, f"registry loads family modules the graph cannot see: {sorted(listed - edges)}"
