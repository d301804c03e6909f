"""The import graph of src/videoprune (lazy imports inside functions included), read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import videoprune

PACKAGE = Path(videoprune.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The videoprune modules ``path`` imports anywhere in its body (``from . import x`` counts x when a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    """module -> the videoprune modules it imports."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: _imports(p, set(files)) for m, p in files.items()}


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return False


def test_the_graph_sees_lazy_imports():
    """The reader finds an import made inside a function (cli imports bench only when a bench runs)."""
    assert "videoprune.bench" in import_graph()["videoprune.cli"]


def test_nothing_the_cli_imports_imports_the_cli_back():
    """No import cycle runs through cli.py: bench and the task exporter take the flag helpers from _config_args."""
    graph = import_graph()
    back = sorted(m for m in graph["videoprune.cli"] if reaches(graph, m, "videoprune.cli"))
    assert back == []
