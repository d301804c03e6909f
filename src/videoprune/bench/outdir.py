"""Where a benchmark writes by default: a fresh ``./videoprune-out/<bench>-<YYYYmmdd-HHMMSS>`` folder."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

__all__ = ["DEFAULT_ROOT", "fresh_dir"]

#: relative to the working directory; the repository's committed benchmarks/results/ is written
#: only when named with --out
DEFAULT_ROOT = "videoprune-out"


def fresh_dir(bench: str, root: str | Path = DEFAULT_ROOT, now: float | None = None) -> Path:
    """Create and return a folder no earlier run used: ``ROOT/BENCH-YYYYmmdd-HHMMSS``, or with ``-2``,
    ``-3``, ... appended when that name exists (two runs in one second). ``now``: epoch seconds
    (default: the current time). ``mkdir`` without ``exist_ok`` claims the name atomically, so
    concurrent runs never share a folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    for i in itertools.count(1):
        path = root / (f"{bench}-{stamp}" if i == 1 else f"{bench}-{stamp}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")
