"""The offline tiny-Molmo2 example of docs/stts.md (the block starting with '# offline') runs as written."""

import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "stts.md"


def test_offline_model_example_runs(tmp_path, monkeypatch):
    """docs/stts.md has exactly one '# offline' example and it runs as written from an empty folder."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S) if b.startswith("# offline")]
    assert len(blocks) == 1, "docs/stts.md must have one '# offline' example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(DOC), "exec"), {})
