"""Stage 0 of the default-model recipe (recipes/direction_stage.py) runs end to end on a few clips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "direction_stage.py"


def test_direction_stage_writes_a_bundle_the_recipe_can_continue_from(tmp_path):
    """Two steps on four clips: one JSON line per evaluation, then a bundle load_bundle restores."""
    out = tmp_path / "stage0"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["--out", str(out), "--ntrain", "4", "--nval", "2", "--nval-single", "2", "--steps", "2", "--every", "1",
            "--bs", "2"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [x["step"] for x in lines[:-1]] == [1, 2]
    assert set(lines[0]["per_type"]) == {"direction", "single"} and 0 <= lines[0]["val"] <= 1
    assert lines[-1] == {"export": str(out), "steps": 2}

    from videoprune.bundle import load_bundle
    from videoprune.data.qa_model import NUM_FRAMES

    bundle = load_bundle(str(out))
    assert bundle.family == "qwen2_5_vl" and bundle.num_frames == NUM_FRAMES
