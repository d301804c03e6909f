"""Pruned video keeps its original M-RoPE ids in vLLM, whatever the seconds per grid.

vLLM's own EVS casts ``second_per_grid_ts`` to an int before building positions, so at 0.5 s per
grid every frame gets t = 0 (vLLM's unpruned ids multiply first and truncate after). The plug-in
keeps the float. Checked by calling the plug-in's post-processing in the vLLM venv on a stand-in
model: the position channels of the kept tokens equal the unpruned ids at the kept indices.
"""

from __future__ import annotations

import json
import subprocess

PROBE = r'''
import json, sys, types
import torch
from videoprune.vllm.models import PruningMixin
from videoprune.vllm.config import PluginConfig

T, H, W, MERGE, TPS = 4, 4, 4, 2, 2.0
out = {}
for sec in (0.5, 0.98, 1.0, 1.5625):
    n = T * (H // MERGE) * (W // MERGE)
    keep = torch.zeros(n, dtype=torch.bool)
    keep[::3] = True
    keep[: (H // MERGE) * (W // MERGE)] = True
    model = types.SimpleNamespace(
        videoprune=PluginConfig(method="evs-pre", rate=0.5, config=None), _videoprune_keep=[keep],
        config=types.SimpleNamespace(vision_config=types.SimpleNamespace(tokens_per_second=TPS)),
        visual=types.SimpleNamespace(spatial_merge_size=MERGE), _notify=lambda *a: None)
    emb = torch.zeros(int(keep.sum()), 8)
    video_input = {"video_grid_thw": torch.tensor([[T, H, W]]), "second_per_grid_ts": torch.tensor([sec])}
    (res,) = PruningMixin._postprocess_video_embeds_evs(model, (emb,), video_input)
    t_unpruned = (torch.arange(T).repeat_interleave(n // T) * (TPS * sec)).long()
    out[str(sec)] = {"t_kept": res[:, 8].long().tolist(), "t_expected": t_unpruned[keep].tolist()}
print(json.dumps(out))
'''


def test_kept_tokens_keep_their_temporal_ids_at_fractional_seconds_per_grid(vllm_python):
    """At 0.5, 0.98, 1.0 and 1.5625 s per grid the kept tokens' t ids equal the unpruned ids at the kept indices."""
    python = vllm_python
    proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for sec, r in res.items():
        assert r["t_kept"] == r["t_expected"], sec
    assert len(set(res["0.5"]["t_expected"])) == 4  # the case vLLM's int cast collapses to t = 0
