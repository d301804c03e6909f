"""Quickstart: EVS on a synthetic 'video' of features, then the pruned sequence layout.

Runs in a second on CPU with torch alone:  python examples/quickstart.py
"""

import torch

import videoprune as vp

torch.manual_seed(0)
T, H, W, MERGE, DIM = 8, 8, 8, 2, 64  # encoder grid before merging; 4x4 = 16 LLM tokens per frame
static = torch.randn(16, DIM)
frames = [static + 0.05 * torch.randn(16, DIM) for _ in range(T)]
frames[5] = torch.randn(16, DIM)  # a scene cut at frame 5
features = torch.cat(frames)  # (T * 16, DIM), raster order (t, h, w) as HF models return them

keep = vp.retention_mask(features, (T, H, W), MERGE, rate=0.75)
print(f"tokens: {keep.numel()} -> {int(keep.sum())} (retained_count = {vp.retained_count(16, T, 0.75)})")
print("kept per frame:", keep.view(T, 16).sum(1).tolist())

# Place the video in a prompt: 3 text tokens, the video, 2 text tokens; keep positions unpruned.
is_video = torch.tensor([[False] * 3 + [True] * keep.numel() + [False] * 2])
plan = vp.build_plan(is_video, keep, grid_thw=(T, H, W), spatial_merge_size=MERGE)
full_positions = torch.arange(is_video.shape[1]).expand(3, 1, -1)  # stand-in for M-RoPE ids
positions = vp.prune_positions(full_positions, plan)
print(f"sequence: {is_video.shape[1]} -> {plan.pruned_length} tokens; trailing text keeps ids",
      positions[0, 0, -2:].tolist(), "; rope delta", vp.rope_deltas(positions, plan).item())
