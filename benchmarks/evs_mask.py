"""Benchmark: videoprune's EVS retention mask against the naive formulation, timed in one run.

The naive formulation is how the serving engines write it: ``1 - F.cosine_similarity`` of the
whole video against itself shifted by one frame (each token normalised twice, full-size
temporaries), then a stable argsort of every dissimilarity. For transparency a second
baseline, the same cosine computed frame pair by frame pair in a Python loop, is timed too.

Usage:  python benchmarks/evs_mask.py [--repeats 5] [--rate 0.75] [--threads N]
Prints a table, then one JSON object as the last stdout line. Exit code 0 always; the ratio
target (>= 2x vs the naive formulation, identical masks) is reported in the JSON as
``target_met``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from videoprune.core.evs import retained_count, retention_mask

SHAPES = [  # (frames T', tokens high H', tokens wide W', feature dim D)
    (64, 24, 42, 3584),
    (128, 16, 16, 2048),
]
MERGE = 2


def naive_mask(features: torch.Tensor, t: int, h: int, w: int, rate: float) -> torch.Tensor:
    """Engine formulation: vectorised pairwise cosine over consecutive frames + full argsort."""
    x = features.view(t, h, w, -1)
    d = 1 - F.cosine_similarity(x[1:], x[:-1], dim=-1)
    d = torch.cat([torch.full_like(x[:1, :, :, 0], 255), d]).view(-1)
    order = torch.argsort(d, descending=True, stable=True)
    mask = torch.zeros_like(d, dtype=torch.bool)
    mask[order[: retained_count(h * w, t, rate)]] = True
    return mask


def per_frame_loop_mask(features: torch.Tensor, t: int, h: int, w: int, rate: float) -> torch.Tensor:
    """Second baseline: the same cosine, one frame pair at a time in a Python loop."""
    x = features.view(t, h * w, -1)
    parts = [torch.full((h * w,), 255.0, dtype=features.dtype)]
    parts += [1 - F.cosine_similarity(x[i], x[i - 1], dim=-1) for i in range(1, t)]
    d = torch.cat(parts)
    order = torch.argsort(d, descending=True, stable=True)
    mask = torch.zeros_like(d, dtype=torch.bool)
    mask[order[: retained_count(h * w, t, rate)]] = True
    return mask


def fast_mask(features: torch.Tensor, t: int, h: int, w: int, rate: float) -> torch.Tensor:
    return retention_mask(features, (t, h * MERGE, w * MERGE), MERGE, rate)


def time_it(fn, *args, repeats: int) -> tuple[float, list[float], torch.Tensor]:
    out = fn(*args)  # warm-up, discarded
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (after one warm-up)")
    parser.add_argument("--rate", type=float, default=0.75, help="EVS pruning rate in [0, 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    results = []
    print(f"{'shape (T,H,W,D)':>22} {'naive s':>9} {'loop s':>9} {'fast s':>9} {'ratio':>7} {'vs loop':>8} identical")
    for t, h, w, dim in SHAPES:
        feats = torch.randn(t * h * w, dim)
        naive_s, naive_all, m_naive = time_it(naive_mask, feats, t, h, w, args.rate, repeats=args.repeats)
        loop_s, loop_all, m_loop = time_it(per_frame_loop_mask, feats, t, h, w, args.rate, repeats=args.repeats)
        fast_s, fast_all, m_fast = time_it(fast_mask, feats, t, h, w, args.rate, repeats=args.repeats)
        identical = bool(torch.equal(m_naive, m_fast) and torch.equal(m_loop, m_fast))
        row = {
            "shape": [t, h, w, dim],
            "naive_s": naive_s,
            "per_frame_loop_s": loop_s,
            "fast_s": fast_s,
            "ratio": naive_s / fast_s,
            "ratio_vs_per_frame_loop": loop_s / fast_s,
            "spread_s": {"naive": [min(naive_all), max(naive_all)], "fast": [min(fast_all), max(fast_all)]},
            "masks_identical": identical,
            "kept": int(m_fast.sum()),
        }
        results.append(row)
        print(
            f"{str((t, h, w, dim)):>22} {naive_s:9.4f} {loop_s:9.4f} {fast_s:9.4f} "
            f"{row['ratio']:6.2f}x {row['ratio_vs_per_frame_loop']:7.2f}x {identical}"
        )
    summary = {
        "benchmark": "evs_mask",
        "rate": args.rate,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "results": results,
        "target_met": all(r["ratio"] >= 2 and r["masks_identical"] for r in results),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
