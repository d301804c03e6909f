"""Recipe for the embedded default models (issue 8): synthetic data, the small Qwen2.5-VL, videoprune train.

Three stages, each one `videoprune.train.train` run on the same synthetic training clips:
  base       a fresh model (videoprune.data.qa_model) trained unpruned;
  uptrained  the base model fine-tuned with EVS on at stochastic rates (--rate-dist);
  stts       an STTS scorer trained on the frozen base model (--stts-ratio, --stts-prune-at).
A base run can start from an earlier export (--init) and add extra clips of chosen question types
(--extra-types, which may name the training-only direction_single; --extra-num; --extra-weight to
oversample the first type; --extra-dir to keep a second set beside DATA/extra). The shipped default
is recipes/direction_stage.py (direction alone) followed by two such base runs (docs/accuracy.md).
The data (train / val splits; never the test split) is written on first use. The validation
accuracy is printed every --eval-every steps as one JSON line (unpruned for base/uptrained,
with the trainer's STTS patch for stts). The export gets the init bundle's videoprune.json, so
load_bundle(export) preprocesses exactly as in training.

Usage (the shipped models, 2026-12-01):
  python recipes/direction_stage.py --out runs/direction --ntrain 4000 --nval 200 --steps 3000
  python recipes/train_default_model.py --stage base --init runs/direction --out runs/base \
      --extra-types direction,flash_count,direction_single --extra-num 6000 --extra-dir extra_dfs --steps 4500
  X="--data runs/base/data --extra-types flash_count,direction,direction_single --extra-num 6000 \
      --extra-dir extra_dfs --extra-weight 2"
  python recipes/train_default_model.py --stage base --init runs/base/run/export --out runs/focus $X \
      --steps 3500 --lr 5e-4
  python recipes/train_default_model.py --stage uptrained --init runs/focus/run/export --out runs/up $X \
      --rate-dist uniform:0.5,0.9 --export-rate 0.75 --steps 600 --lr 3e-4
  python recipes/train_default_model.py --stage stts --init runs/focus/run/export --out runs/stts $X \
      --steps 300 --lr 5e-4 --eval-every 100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("base", "uptrained", "stts"), default="base")
    ap.add_argument("--out", required=True, help="working folder (data/, init/, run/)")
    ap.add_argument("--data", default=None, help="folder with train.jsonl/val.jsonl (default: OUT/data, written if missing)")
    ap.add_argument("--stts-ratio", type=float, default=0.5)
    ap.add_argument("--stts-prune-at", type=int, default=0)
    ap.add_argument("--train", type=int, default=12000, help="training clips")
    ap.add_argument("--val", type=int, default=300, help="validation clips")
    ap.add_argument("--extra-types", default=None,
                    help="comma-separated question types of extra training clips (train split, seed --seed + 1, "
                         "types in turn), trained on together with --data's train.jsonl")
    ap.add_argument("--extra-num", type=int, default=6000, help="number of extra clips (with --extra-types)")
    ap.add_argument("--extra-dir", default="extra", help="folder under DATA the extra clips are written to (once) and read from")
    ap.add_argument("--extra-weight", type=int, default=1,
                    help="list the extra clips of the first --extra-types type this many times in the training mix "
                         "(oversampling; the trainer draws lines uniformly)")
    ap.add_argument("--extra-only", action="store_true",
                    help="train on the extra clips alone, without DATA/train.jsonl (a single-skill stage, e.g. "
                         "--extra-types direction,direction_single before the full mix)")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rate-dist", default="fixed:0.0", help="EVS rate per step (uptraining: e.g. beta:2,2,0.9)")
    ap.add_argument("--export-rate", type=float, default=None, help="serving rate recorded for stochastic rates")
    ap.add_argument("--init", default=None, help="start from this bundle instead of a fresh model")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true",
                    help="replace an earlier run in OUT/run (without it, an existing run there is refused)")
    ap.add_argument("--attn", choices=("eager", "sdpa"), default="sdpa",
                    help="attention kernel (on CPU, with subnormals flushed, the two were within 7%% for this model "
                         "in docs/train.md's runs)")
    ap.add_argument("--no-flush-denormal", action="store_true",
                    help="keep subnormal floats (by default they are flushed to zero: once trained, this model's "
                         "attention makes them, and they slowed CPU steps by 2-10%% in docs/train.md's runs)")
    args = ap.parse_args()

    import torch

    import videoprune
    from videoprune.bench.accuracy import evaluate, read_records
    from videoprune.bundle import SPEC_FILE, load_bundle
    from videoprune.data.qa_model import FPS, FRAME_SIZE, NUM_FRAMES, build_qa_model, save_bundle
    from videoprune.data.synthetic import write_dataset
    from videoprune.train import train
    from videoprune.train.config import TrainConfig
    from videoprune.train.tokenizer import build_word_tokenizer

    torch.set_flush_denormal(not args.no_flush_denormal)
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    if not (data / "train.jsonl").exists():
        write_dataset(data, "val", args.val, args.seed, num_frames=NUM_FRAMES, size=FRAME_SIZE, fps=FPS)
        write_dataset(data, "train", args.train, args.seed, num_frames=NUM_FRAMES, size=FRAME_SIZE, fps=FPS)
    train_jsonl = data / "train.jsonl"
    if args.extra_types:
        train_jsonl = _with_extra(data, out, args.extra_types.split(","), args.extra_num, args.seed + 1, args.extra_weight,
                                  args.extra_dir, only=args.extra_only)
    elif args.extra_only:
        raise SystemExit("--extra-only needs --extra-types")
    init = Path(args.init) if args.init else out / "init"
    if not (init / "config.json").exists():
        tok = build_word_tokenizer()
        save_bundle(build_qa_model(tok, "default", seed=args.seed), tok, init)

    bundle = load_bundle(str(init))
    val = read_records(data / "val.jsonl")
    t0 = time.time()

    def on_step(info):
        if info.step % args.eval_every and info.step != args.steps:
            return
        model = getattr(info.model, "module", info.model)  # DDP
        if args.stage == "stts":
            model = model.model  # STTSTrainModule holds the patched HF model and the scorer
        was = model.training
        model.eval()
        # stts: the trainer's patch prunes at --stts-ratio; evs stages: measured unpruned
        with contextlib.nullcontext() if args.stage == "stts" else videoprune.disabled(model):
            acc, per_type, _ = evaluate(model, bundle, val, batch_size=25)
        model.train(was)
        print(json.dumps({"step": info.step, "loss": round(info.loss, 4), "val_acc": round(acc, 4),
                          "per_type": {k: round(v, 2) for k, v in per_type.items()}, "t": round(time.time() - t0)}),
              flush=True)

    cfg = TrainConfig(
        data=str(train_jsonl), model=str(init), output_dir=str(out / "run"),
        method="stts" if args.stage == "stts" else "evs", stts_ratio=args.stts_ratio, stts_prune_at=args.stts_prune_at,
        rate_dist=args.rate_dist, export_rate=args.export_rate, lr=args.lr, weight_decay=0.01, warmup_steps=100,
        schedule="cosine", max_steps=args.steps, batch_size=args.batch_size, num_frames=NUM_FRAMES,
        min_pixels=FRAME_SIZE * FRAME_SIZE, max_pixels=FRAME_SIZE * FRAME_SIZE, num_workers=1, save_every=500,
        log_every=10, seed=args.seed, attn_implementation=args.attn, overwrite=args.overwrite,
    )
    result = train(cfg, on_step=on_step, progress=False)
    shutil.copy(init / SPEC_FILE, Path(result.export_dir) / SPEC_FILE)
    print(json.dumps({"export": result.export_dir, "steps": result.steps}))


def _with_extra(data, out, qtypes, num, seed, weight=1, folder="extra", only=False):
    """Write the extra clips (once, to DATA/FOLDER) and a JSONL (in OUT) listing data's training clips and them.

    With ``weight`` > 1 the extra clips of type ``qtypes[0]`` are listed ``weight`` times; with
    ``only`` data's training clips are left out.
    """
    from videoprune.data.qa_model import FPS, FRAME_SIZE, NUM_FRAMES
    from videoprune.data.synthetic import write_dataset

    if weight < 1:
        raise SystemExit(f"--extra-weight must be >= 1, got {weight}")
    folder = data / folder
    if not (folder / "train.jsonl").exists():
        write_dataset(folder, "train", num, seed, num_frames=NUM_FRAMES, size=FRAME_SIZE, fps=FPS, qtypes=qtypes)
    extra = _read_jsonl(folder / "train.jsonl")
    have = sorted({rec["type"] for rec in extra})
    if have != sorted(set(qtypes)) or len(extra) != num:
        raise SystemExit(f"{folder} already holds {len(extra)} clips of types {have}, not {num} of {sorted(set(qtypes))}; "
                         "remove it, or pass another --data or --extra-dir")
    lines = [] if only else [_rebase(rec, data, out) for rec in _read_jsonl(data / "train.jsonl")]
    for rec in extra:
        lines += [_rebase(rec, folder, out)] * (weight if rec["type"] == qtypes[0] else 1)
    out.mkdir(parents=True, exist_ok=True)
    mix = out / "train_mix.jsonl"
    mix.write_text("\n".join(lines) + "\n")
    return mix


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rebase(rec, src, dst):
    """The JSONL line of record ``rec`` (from folder src) with its video path made relative to folder dst."""
    return json.dumps({**rec, "video": os.path.relpath((src / rec["video"]).resolve(), dst.resolve())})


if __name__ == "__main__":
    main()
