"""Profile of one generate() (first token only) on the bench's scaled model: where TTFT goes.

Usage: PYTHONPATH=src python benchmarks/profile_ttft.py [scale] [frames] [rate] [method] [model]
(defaults: 0.0625 64 0.75 evs-pre qwen2.5-vl-7b). Prints a cProfile summary (Python call tree,
cumulative) and a torch.profiler summary (operators by self CPU time).
"""

import cProfile
import pstats
import sys

import torch

from videoprune.bench.speed import METHODS, SpeedConfig, _build, _load_frames, _make_inputs

argv = sys.argv[1:] + [None] * 5
scale = float(argv[0] or 0.0625)
frames = int(argv[1] or 64)
rate = float(argv[2] or 0.75)
method = argv[3] or "evs-pre"
name = argv[4] or "qwen2.5-vl-7b"
torch.set_num_threads(1)
cfg = SpeedConfig(model=name, scale=scale, frames=str(frames), method=method)
model, _ = _build(cfg)
clip, _ = _load_frames(cfg, frames)
handle = METHODS[method].apply(model, rate)


def ttft():
    inputs, _, _ = _make_inputs(model, cfg, clip)
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=0)


print(f"# {name} scale {scale}, {frames} frames, {method} rate {rate}, 1 torch thread")
ttft()  # warm-up
prof = cProfile.Profile()
prof.enable()
ttft()
prof.disable()
pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(40)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as tp:
    ttft()
print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
