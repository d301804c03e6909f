"""Every test states its rule: each test function under tests/ has a docstring (STYLE.md principle 8)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def undocumented_tests(root: Path) -> list[str]:
    """``file:line:name`` of each function or method under ``root`` that pytest would collect as a test
    (its name starts with ``test``) and that has no docstring."""
    missing = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                if not (ast.get_docstring(node) or "").strip():
                    missing.append(f"{path.relative_to(root.parent)}:{node.lineno}:{node.name}")
    return missing


def test_every_test_has_a_docstring_stating_its_rule():
    """A test without a docstring fails this one, naming file:line:function, so each test keeps saying what must hold."""
    missing = undocumented_tests(TESTS)
    assert not missing, f"{len(missing)} tests have no docstring:\n" + "\n".join(missing)


def test_the_checker_finds_functions_and_methods_without_docstrings(tmp_path):
    """The checker flags module-level and class-level tests lacking a docstring and passes documented ones."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_x.py").write_text(
        'def test_bare():\n    assert True\n\n\n'
        'def test_documented():\n    """Holds."""\n\n\n'
        'class TestThing:\n    def test_method(self):\n        pass\n\n    async def test_async(self):\n        """Holds."""\n\n\n'
        'def helper():\n    pass\n'
    )
    assert undocumented_tests(tmp_path) == [f"{tmp_path.name}/sub/test_x.py:1:test_bare",
                                                  f"{tmp_path.name}/sub/test_x.py:10:test_method"]
