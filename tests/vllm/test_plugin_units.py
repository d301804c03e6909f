"""Small plug-in functions checked in the vLLM venv on stand-ins (no engine): the float16 clamp before the merger,
and the provisional prompt positions of prompts with several pruned items."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

PROBE = r'''
import json, types
import torch
from videoprune.vllm.encoder import merge_to_raster
from videoprune.vllm.models import _placeholder_positions

out = {}
visual = types.SimpleNamespace(merger=lambda h: h.squeeze(1))
big = torch.tensor([[[70000.0]], [[-2.0 ** 100]], [[1.5]]])
out["f16"] = merge_to_raster(visual, big.half(), {}).float().flatten().tolist()
out["f16_limit"] = float(torch.tensor(torch.finfo(torch.float16).max - 1000, dtype=torch.float16))  # as stored
out["f32"] = merge_to_raster(visual, big, {}).flatten().tolist()

def feat(modality, offset, length, grid):
    data = {f"{modality}_grid_thw": types.SimpleNamespace(data=torch.tensor(grid))}
    return types.SimpleNamespace(modality=modality, data=data,
                                 mm_position=types.SimpleNamespace(offset=offset, length=length))

# text(3) image(16 of 1x8x8) text(2) video(32 of 4x8x8 kept) text(2) video(48 of 6x8x8 kept) text(5)
feats = [feat("video", 23, 32, [4, 8, 8]), feat("image", 3, 16, [1, 8, 8]), feat("video", 57, 48, [6, 8, 8])]
pos, delta = _placeholder_positions(110, feats, 2)
out["shape"] = list(pos.shape)
out["delta"] = delta
out["monotone_text"] = pos[:, :3].tolist()
print(json.dumps(out))
'''


def _probe(python: str) -> dict:
    import videoprune

    env = dict(os.environ, PYTHONPATH=str(Path(videoprune.__file__).resolve().parents[1]))
    proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probe(vllm_python) -> dict:
    return _probe(vllm_python)


def test_float16_hidden_states_are_clamped_before_the_merger(probe):
    """As vLLM's tower forward: float16 values beyond max - 1000 are clamped, float32 passes unchanged."""
    lim = probe["f16_limit"]
    assert lim < 65504.0  # float16's max: 70000 and -2**100 would be inf without the clamp
    assert probe["f16"] == [lim, -lim, 1.5]
    assert probe["f32"] == [70000.0, -2.0 ** 100, 1.5]


def test_placeholder_positions_cover_prompts_with_several_pruned_items(probe):
    """One id triple per prompt token (vLLM's own fails on a second item after a pruned video); text counts from 0."""
    assert probe["shape"] == [3, 110]
    assert probe["monotone_text"] == [[0, 1, 2]] * 3
    assert isinstance(probe["delta"], int)
