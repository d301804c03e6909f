"""videoprune.stts is pure torch: importing it does not import transformers."""

import os
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"


def test_import_does_not_pull_in_transformers():
    """Importing videoprune.stts does not import transformers, so the pure-torch core stays usable without it."""
    code = "import sys, videoprune.stts; assert 'transformers' not in sys.modules, 'transformers imported'"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
