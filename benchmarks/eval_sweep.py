"""Sweep pruning methods x rates through lmms-eval on any task; plot accuracy vs kept tokens like `bench accuracy`.

Config in (flags), JSON out: ``OUT/eval_sweep.json`` (one result per run: method, rate,
kept_fraction, kept_fraction_measured from the plug-in's ``throughput.avg_kept_fraction``,
accuracy = the task's ``--metric``) and ``OUT/eval_sweep.png`` (the same plot style as
``videoprune bench accuracy``). The last stdout line is one JSON object. Each run is one
``lmms-eval --model videoprune`` process; a failed run stops the sweep (nothing is reported
for a method that did not run as labelled).

Example (GPU)::

    python benchmarks/eval_sweep.py --pretrained Qwen/Qwen2.5-VL-7B-Instruct --tasks videomme \\
        --methods none,evs,evs-pre,random,uniform --rates 0.5,0.75,0.9 \\
        --model-args max_frames=64,dtype=bfloat16 --metric videomme_perception_score --out runs/videomme
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _metric(results: dict, task: str, name: str | None) -> float:
    row = results["results"][task]
    keys = [k for k in row if k != "alias" and "stderr" not in k and isinstance(row[k], (int, float))]
    key = next((k for k in keys if name is None or k.split(",")[0] == name), None)
    if key is None:
        raise SystemExit(f"task {task}: no metric {name!r} in its results ({', '.join(keys)})")
    return float(row[key])


def run_one(args, method: str, rate: float | None, out: Path) -> dict:
    model_args = f"pretrained={args.pretrained},method={method}" + (f",rate={rate}" if rate is not None else "")
    if args.model_args:
        model_args += "," + args.model_args
    run_dir = out / (f"{method}-{rate}" if rate is not None else method)
    cmd = [args.lmms_eval, "--model", "videoprune", "--model_args", model_args, "--tasks", args.tasks,
           "--batch_size", str(args.batch_size), "--output_path", str(run_dir)]
    if args.include_path:
        cmd += ["--include_path", args.include_path]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    print("+ " + " ".join(cmd), file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"lmms-eval failed for {method} {rate}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    [res_file] = sorted(run_dir.rglob("*_results.json"))[-1:]
    res = json.loads(res_file.read_text())
    task = args.tasks.split(",")[0]
    kept = res.get("throughput", {}).get("avg_kept_fraction")
    return {"method": method, "rate": rate, "kept_fraction": 1.0 if rate is None else round(1.0 - rate, 6),
            "kept_fraction_measured": round(kept, 4) if kept is not None else None,
            "accuracy": _metric(res, task, args.metric), "results_file": str(res_file)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrained", default="default", help="checkpoint or hub id (default: the embedded model)")
    p.add_argument("--tasks", required=True, help="lmms-eval task (the first one is scored)")
    p.add_argument("--include_path", default=None, help="folder of extra task YAMLs (e.g. export-lmms-task's)")
    p.add_argument("--methods", default="none,evs,evs-pixel,evs-pre,random,uniform,stts")
    p.add_argument("--rates", default="0.5,0.75,0.9", help="drop rates in [0, 1) for every method but none")
    p.add_argument("--model-args", default="", help="more videoprune model args, e.g. max_frames=64,dtype=bfloat16")
    p.add_argument("--metric", default=None, help="metric name in the task's results (default: its first)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="first N documents only (a smoke run)")
    p.add_argument("--lmms-eval", default=shutil.which("lmms-eval") or "lmms-eval", help="the lmms-eval executable")
    p.add_argument("--out", default="videoprune-out/eval-sweep")
    args = p.parse_args(argv)

    from videoprune.bench.accuracy import _plot

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    results = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        for rate in ([None] if method == "none" else rates):
            results.append(run_one(args, method, rate, out))
    report = {"benchmark": "eval_sweep", "pretrained": args.pretrained, "tasks": args.tasks, "results": results}
    (out / "eval_sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    plotted = [{**r, "kept_fraction_measured": r["kept_fraction_measured"] or r["kept_fraction"]} for r in results]
    _plot(plotted, out / "eval_sweep.png", title=f"{args.tasks} ({args.pretrained}): accuracy vs kept tokens")
    print(json.dumps({"report": str(out / "eval_sweep.json"), "plot": str(out / "eval_sweep.png"),
                      "results": [{k: r[k] for k in ("method", "rate", "kept_fraction_measured", "accuracy")}
                                  for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
