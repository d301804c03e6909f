"""Time a Qwen vision tower with SDPA (one attention call per segment) against fast vision attention (one per block).

Builds ONLY the vision tower of a named architecture (``videoprune.bench.configs``: qwen2-vl-7b,
qwen2.5-vl-3b, qwen2.5-vl-7b, qwen3-vl-4b, qwen3-vl-8b), random weights created directly on
``--device``, optionally shrunk by ``--scale``; nothing is downloaded. Input: ``--frames`` random
frames of ``--height`` x ``--width`` px (default 272x640), resized to the model's patch grid the
way the Qwen processors round (multiples of patch_size * spatial_merge_size), one video. Per
implementation: ``--warmup`` discarded runs, then the median of ``--repeats`` (CUDA: synchronized),
both implementations interleaved round-robin. Prints a table (with the largest and the relative L2
difference of the two outputs) and, last, one JSON object.

Usage:
  python benchmarks/vision_attention_speed.py --model qwen2.5-vl-7b --scale 0.125 --frames 8   # CPU, seconds
  python benchmarks/vision_attention_speed.py --device cuda --dtype bfloat16 --frames 32,128
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

_TOWERS = {
    "qwen2_vl": ("transformers.models.qwen2_vl.modeling_qwen2_vl", "Qwen2VisionTransformerPretrainedModel"),
    "qwen2_5_vl": ("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "Qwen2_5_VisionTransformerPretrainedModel"),
    "qwen3_vl": ("transformers.models.qwen3_vl.modeling_qwen3_vl", "Qwen3VLVisionModel"),
}


def build_tower(name: str, scale: float, device: str, dtype: torch.dtype, seed: int = 0):
    """The vision tower of architecture ``name`` (scaled), random weights, parameters created on ``device``."""
    import importlib

    import transformers as tf

    from videoprune.bench.configs import resolve_model, scale_config

    arch = resolve_model(name)
    if arch is None:
        raise SystemExit(f"unknown architecture {name!r}")
    if scale != 1:
        arch = scale_config(arch, scale)
    model_type = arch.pop("model_type")
    if model_type not in _TOWERS:
        raise SystemExit(f"{name} ({model_type}) has no Qwen vision tower; choose a qwen2/2.5/3-vl architecture")
    config = tf.AutoConfig.for_model(model_type, **arch)
    vcfg = config.vision_config
    vcfg._attn_implementation = "sdpa"
    module, cls = _TOWERS[model_type]
    tower_cls = getattr(importlib.import_module(module), cls)
    torch.manual_seed(seed)
    with torch.device(device):
        tower = tower_cls._from_config(vcfg, dtype=dtype)
    return tower.eval(), vcfg


def _rounded(x: int, factor: int) -> int:
    return max(factor, round(x / factor) * factor)


def make_video(vcfg, frames: int, height: int, width: int, device: str, dtype: torch.dtype, seed: int = 0):
    """Random patchified pixels and grid_thw of one ``frames``-frame video (as the processor would lay them out)."""
    p, m, tp = int(vcfg.patch_size), int(vcfg.spatial_merge_size), int(vcfg.temporal_patch_size)
    h, w = _rounded(height, p * m), _rounded(width, p * m)
    t = max(1, frames // tp)
    grid = torch.tensor([[t, h // p, w // p]], device=device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    rows = t * (h // p) * (w // p)
    pixels = torch.randn(rows, int(vcfg.in_channels) * tp * p * p, generator=g).to(device=device, dtype=dtype)
    return pixels, grid, (h, w)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_tower(tower, pixels, grid, device, impls, warmup, repeats):
    """``{impl: [seconds per run]}``, implementations interleaved round-robin after ``warmup`` runs each."""
    from videoprune.models.vision_attention import enable_fast_vision_attention

    def run(impl):
        handle = enable_fast_vision_attention(tower) if impl == "fast" else None
        try:
            _sync(device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = tower(pixels, grid_thw=grid)
            _sync(device)
            return time.perf_counter() - t0, out.pooler_output
        finally:
            if handle is not None:
                handle.remove()

    outs = {}
    for impl in impls:
        for _ in range(warmup):
            _, outs[impl] = run(impl)
    times = {impl: [] for impl in impls}
    for _ in range(repeats):
        for impl in impls:
            dt, outs[impl] = run(impl)
            times[impl].append(dt)
    return times, outs


def _segments(grid, vcfg) -> dict:
    """Attention calls per block under SDPA: temporal slices (full blocks) and windows (windowed blocks)."""
    from transformers.vision_utils import get_vision_cu_seqlens

    out = {"slices": int(get_vision_cu_seqlens(grid.cpu()).numel() - 1)}
    if hasattr(vcfg, "window_size") and hasattr(vcfg, "fullatt_block_indexes"):
        from transformers.vision_utils import get_vision_window_index

        _, cu = get_vision_window_index(grid.cpu(), int(vcfg.spatial_merge_size), int(vcfg.window_size),
                                        int(vcfg.patch_size))
        out["windows"] = int(torch.unique_consecutive(cu).numel() - 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-vl-7b", help="named architecture (videoprune.bench.configs)")
    ap.add_argument("--scale", type=float, default=1.0, help="shrink widths/depths (geometry kept), e.g. 0.125 on CPU")
    ap.add_argument("--frames", default="32,128", help="comma-separated frame counts")
    ap.add_argument("--height", type=int, default=272)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float32 / bfloat16 / float16 (default: bfloat16 on cuda, else float32)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or ("bfloat16" if torch.device(args.device).type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)

    from videoprune.models.vision_attention import varlen_available

    tower, vcfg = build_tower(args.model, args.scale, args.device, dtype)
    varlen = varlen_available(args.device) and dtype in (torch.float16, torch.bfloat16)
    results = []
    header = f"{'frames':>6} {'patches':>8} {'segments/blk':>14} {'sdpa s':>9} {'fast s':>9} {'speedup':>8} {'max|diff|':>10} {'rel L2':>9}"
    print(f"{args.model} vision tower, scale {args.scale}, depth {len(tower.blocks)}, {args.device} {dtype_name}, "
          f"fast path: {'varlen_attn' if varlen else 'one SDPA call per distinct segment length'}")
    print(header)
    for frames in [int(f) for f in args.frames.split(",") if f]:
        pixels, grid, (h, w) = make_video(vcfg, frames, args.height, args.width, args.device, dtype)
        times, outs = time_tower(tower, pixels, grid, args.device, ("sdpa", "fast"), args.warmup, args.repeats)
        med = {k: statistics.median(v) for k, v in times.items()}
        d = outs["fast"].float() - outs["sdpa"].float()
        diff, rel = float(d.abs().max()), float(d.norm() / outs["sdpa"].float().norm())
        seg = _segments(grid, vcfg)
        row = dict(frames=frames, frame_hw=[h, w], patches=int(pixels.shape[0]), segments_per_block=seg,
                   sdpa_s=med["sdpa"], fast_s=med["fast"], speedup=med["sdpa"] / med["fast"],
                   samples={k: v for k, v in times.items()}, max_abs_diff=diff, rel_l2_diff=rel)
        results.append(row)
        segs = "/".join(str(v) for v in seg.values())
        print(f"{frames:>6} {row['patches']:>8} {segs:>14} {med['sdpa']:>9.4f} {med['fast']:>9.4f} "
              f"{row['speedup']:>7.2f}x {diff:>10.2e} {rel:>9.2e}")
        del pixels, outs
    print(json.dumps(dict(model=args.model, scale=args.scale, device=args.device, dtype=dtype_name,
                          torch=torch.__version__, varlen_attn=varlen, depth=len(tower.blocks),
                          warmup=args.warmup, repeats=args.repeats, results=results)))


if __name__ == "__main__":
    main()
