"""cProfile of one pruned generate() (first token only) on the bench's scaled model: where TTFT goes.

Usage: PYTHONPATH=src python benchmarks/profile_ttft.py [scale] [frames] [rate]
"""

import cProfile
import pstats
import sys

import torch

from videoprune.bench.speed import METHODS, SpeedConfig, _build, _load_frames, _make_inputs

scale, frames, rate = (float(sys.argv[1]) if len(sys.argv) > 1 else 0.0625,
                       int(sys.argv[2]) if len(sys.argv) > 2 else 64, float(sys.argv[3]) if len(sys.argv) > 3 else 0.75)
torch.set_num_threads(1)
cfg = SpeedConfig(model="qwen2.5-vl-7b", scale=scale, frames=str(frames))
model, _ = _build(cfg)
clip, _ = _load_frames(cfg, frames)
handle = METHODS["evs-pre"].apply(model, rate)


def ttft():
    inputs, _, _ = _make_inputs(model, cfg, clip)
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=0)


ttft()  # warm-up
prof = cProfile.Profile()
prof.enable()
ttft()
prof.disable()
pstats.Stats(prof).sort_stats("cumulative").print_stats(28)
