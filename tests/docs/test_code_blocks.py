r"""Every code block of README.md and docs/*.md runs as written (or says, in the doc, why it cannot here).

A fenced block tagged ``python``, ``bash`` or ``console`` is run in a fresh temporary folder
(holding links to the repository's ``benchmarks/``, ``examples/`` and ``recipes/``, so paths read
as from the repository root) with the test's virtual environment first on PATH (what ``source
.venv/bin/activate`` gives a reader):

* ``python``: the block is a script, run by the venv's python;
* ``bash``: the block is a script, run by ``bash -e``;
* ``console``: the lines starting with ``$ `` (and their ``\`` continuation lines) are
  commands, run in order by ``bash -e``; the other lines are sample output.

A block that cannot run on a CPU machine without network (a hub checkpoint, a GPU, a 20-minute
benchmark) is preceded in the doc by ``<!-- docs-test: skip REASON -->``, so the reader sees
why too; a block that continues the previous one is preceded by ``<!-- docs-test: continues -->``
and is run after it in the same script. Untagged blocks (tables, layouts) are not code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash", "console")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
TAG = re.compile(r"<!--\s*docs-test:\s*(skip|continues)\b\s*(.*?)\s*-->\s*$")
TIMEOUT_S = 600
LINKED = ("benchmarks", "examples", "recipes")

pytestmark = pytest.mark.docs


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    tag: str | None  # "skip", "continues" or None
    reason: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def read_blocks(doc: Path) -> list[Block]:
    text = doc.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        tag = TAG.search(before)
        out.append(Block(doc, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2),
                         tag.group(1) if tag else None, tag.group(2) if tag else ""))
    return out


def _script(block: Block) -> str:
    if block.lang != "console":
        return block.code
    lines, continued = [], False
    for line in block.code.splitlines():  # "$ cmd \" continues on the next lines; other lines are output
        if line.startswith("$ ") or continued:
            lines.append(line[2:] if line.startswith("$ ") else line)
            continued = line.rstrip().endswith("\\")
    return "\n".join(lines)


def runnable_units() -> list[tuple[str, str, str]]:
    """(id, language, script) for every block that runs, continuation blocks joined to the one before."""
    units: list[list] = []
    for doc in DOCS:
        prev = None
        for b in read_blocks(doc):
            if b.lang not in RUNNABLE:
                prev = None
                continue
            if b.tag == "continues":
                if prev is None or prev[1] != ("bash" if b.lang == "console" else b.lang):
                    raise ValueError(f"{b.id}: 'docs-test: continues' must follow a runnable block of the same kind")
                prev[2] += "\n" + _script(b)
                continue
            if b.tag == "skip":
                prev = None
                continue
            prev = [b.id, "bash" if b.lang == "console" else b.lang, _script(b)]
            units.append(prev)
    return [tuple(u) for u in units]


def test_every_skipped_block_gives_a_reason():
    """A 'docs-test: skip' tag names why the block cannot run here."""
    bad = [b.id for doc in DOCS for b in read_blocks(doc) if b.tag == "skip" and len(b.reason) < 10]
    assert not bad, f"skipped without a reason: {bad}"


def test_code_blocks_are_found():
    """The extractor sees the README's runnable blocks (guards against a regex that matches nothing)."""
    ids = [u[0] for u in runnable_units()]
    assert sum(i.startswith("README.md") for i in ids) >= 3


def _env() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(venv_bin).parent)
    env["HF_HUB_OFFLINE"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.parametrize("unit", runnable_units(), ids=lambda u: u[0])
def test_block_runs_as_written(unit, tmp_path):
    """The block exits 0 when run as a reader would, from an empty folder with the venv active."""
    block_id, lang, script = unit
    for name in LINKED:  # the repository's scripts, reachable as the docs write them (benchmarks/...)
        (tmp_path / name).symlink_to(ROOT / name)
    cmd = [sys.executable, "-c", script] if lang == "python" else ["bash", "-e", "-c", script]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{block_id} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
