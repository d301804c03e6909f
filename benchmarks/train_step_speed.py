"""Seconds per training step of `videoprune train` on CPU for each attention kernel, with and without
subnormal floats flushed to zero, measured in one run on the same data and model.

Each setting runs --steps steps (batch --batch-size, --num-workers DataLoader workers) of EVS
training at rate 0 and reports the mean wall time of the steps after the first --skip. Defaults:
the embedded default model and 16-frame 112 px clips of the synthetic QA set (written to
--data if missing).

Usage:
  python benchmarks/train_step_speed.py --data /tmp/qa-data
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle or checkpoint (default: the embedded default model)")
    ap.add_argument("--data", default="qa-data", help="folder with train.jsonl (64 synthetic clips written if missing)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--skip", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=1)
    args = ap.parse_args()
    if args.steps <= args.skip + 1:
        raise SystemExit("--steps must exceed --skip + 1")

    import torch

    from videoprune.bundle import EMBEDDED
    from videoprune.data.qa_model import FPS, FRAME_SIZE, NUM_FRAMES
    from videoprune.data.synthetic import write_dataset
    from videoprune.train import TrainConfig, train

    model = args.model or str(EMBEDDED["default"])
    data = Path(args.data)
    if not (data / "train.jsonl").exists():
        write_dataset(data, "train", max(64, args.batch_size), 0, num_frames=NUM_FRAMES, size=FRAME_SIZE, fps=FPS)
    rows = []
    for flush in (False, True):
        for attn in ("eager", "sdpa"):
            torch.set_flush_denormal(flush)
            stamps = []
            with tempfile.TemporaryDirectory() as tmp:
                cfg = TrainConfig(data=str(data / "train.jsonl"), model=model, output_dir=tmp, rate_dist="fixed:0.0",
                                  lr=1e-4, max_steps=args.steps, batch_size=args.batch_size, num_frames=NUM_FRAMES,
                                  min_pixels=FRAME_SIZE * FRAME_SIZE, max_pixels=FRAME_SIZE * FRAME_SIZE,
                                  num_workers=args.num_workers, no_export=True, attn_implementation=attn,
                                  log_every=args.steps)
                train(cfg, on_step=lambda info: stamps.append(time.perf_counter()), progress=False)
            gaps = [b - a for a, b in zip(stamps[args.skip:], stamps[args.skip + 1:])]
            rows.append({"attn": attn, "flush_denormal": flush, "s_per_step": round(sum(gaps) / len(gaps), 3)})
            print(f"attn={attn:<5} flush_denormal={str(flush):<5} {rows[-1]['s_per_step']:.3f} s/step", flush=True)
    torch.set_flush_denormal(False)
    base = rows[1]["s_per_step"]  # sdpa, subnormals kept: transformers' default on CPU
    for r in rows:
        r["speedup_vs_default"] = round(base / r["s_per_step"], 2)
    print(json.dumps({"benchmark": "train_step_speed", "model": model, "batch_size": args.batch_size,
                      "num_workers": args.num_workers, "torch_threads": torch.get_num_threads(), "results": rows}))


if __name__ == "__main__":
    main()
