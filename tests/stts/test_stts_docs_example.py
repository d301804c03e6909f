"""The runnable example in docs/stts.md runs as written."""

import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "stts.md"


def test_docs_example_runs():
    """The first python example of docs/stts.md runs as written."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/stts.md has no python example"
    exec(compile(blocks[0], str(DOC), "exec"), {})
