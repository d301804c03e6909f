"""TTFT and requests/s of vLLM serving video under concurrency, per pruning method (issue 21).

Runs in a Python that has vLLM and videoprune's plug-in (``make .venv-vllm`` builds one on a
CPU machine; on a GPU box, ``pip install vllm videoprune``). Each method gets its own engine in
its own subprocess (a fresh process per engine frees its memory for the next); each engine
serves ``--rounds x C`` requests at each concurrency ``C``, all with the same video and prompt,
``--max-tokens`` generated tokens each (``ignore_eos``), with prefix caching and the multimodal
processor cache off so that every request pays its full prefill and encoder.

Methods: ``none`` (vLLM's own model, no ``videoprune`` block), ``vllm-evs`` (vLLM's built-in
``video_pruning_rate``), and the plug-in's ``evs``, ``evs-pre`` and ``stts`` (``--scorer`` is the
file ``handle.save_scorer`` wrote; without one, ``stts`` is refused up front).

On the CPU with the tiny checkpoint this only shows that the harness works: the figures of a
model with a few thousand parameters measure per-request overhead, not pruning. Run it on a GPU
with a real checkpoint for numbers that mean something::

    python benchmarks/vllm_serving.py --model Qwen/Qwen2.5-VL-7B-Instruct --methods none,vllm-evs,evs,evs-pre \\
        --frames 32 --concurrency 1,4,16 --out out/vllm_serving

Writes ``results.json`` and ``results.md`` (one row per method x concurrency) under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("none", "vllm-evs", "evs", "evs-pre", "stts")
PROMPT = ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{question}<|im_end|>\n"
          "<|im_start|>assistant\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder or hub id vLLM can load")
    p.add_argument("--methods", default="none,vllm-evs,evs,evs-pre", help="comma-separated, of: " + ", ".join(METHODS))
    p.add_argument("--rate", type=float, default=0.75, help="pruning rate in [0, 1) for every pruning method")
    p.add_argument("--scorer", default=None, help="method stts: scorer file saved by handle.save_scorer")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated request concurrencies")
    p.add_argument("--rounds", type=int, default=2, help="requests per concurrency level = rounds x concurrency")
    p.add_argument("--video", default=None, help="video file (default: videoprune's bundled sample clip)")
    p.add_argument("--frames", type=int, default=16, help="frames sampled uniformly from the video (even)")
    p.add_argument("--size", default=None, help="resize frames to WIDTHxHEIGHT before sending (default: as decoded)")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens generated per request")
    p.add_argument("--dtype", default="auto", help="vLLM dtype (float32 for the tiny CPU checkpoint)")
    p.add_argument("--max-model-len", type=int, default=None, help="vLLM max_model_len (default: the model's)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor_parallel_size")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / compilation (what the CPU run uses)")
    p.add_argument("--in-process", action="store_true",
                   help="run the engine core in the worker process (VLLM_ENABLE_V1_MULTIPROCESSING=0; the CPU run)")
    p.add_argument("--out", default="out/vllm_serving", help="output folder")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.method_list = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in a.method_list if m not in METHODS]
    if bad or not a.method_list:
        p.error(f"--methods: unknown {bad}; choose from {', '.join(METHODS)}")
    if not 0.0 <= a.rate < 1.0:
        p.error(f"--rate must be in [0, 1), got {a.rate}")
    if "stts" in a.method_list and not a.scorer:
        p.error("method stts needs --scorer (a file saved by handle.save_scorer)")
    try:
        a.levels = [int(c) for c in a.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error(f"--concurrency must be comma-separated ints, got {a.concurrency!r}")
    if not a.levels or min(a.levels) < 1 or a.rounds < 1 or a.max_tokens < 1:
        p.error("--concurrency values, --rounds and --max-tokens must be >= 1")
    if a.size is not None and not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", a.size.lower()):
        p.error(f"--size must be WIDTHxHEIGHT in pixels, e.g. 448x448, got {a.size!r}")
    if a.frames < 2 or a.frames % 2:
        p.error(f"--frames must be even and >= 2 (Qwen merges frame pairs), got {a.frames}")
    return a


# ------------------------------------------------------------------------------------------
# the video and the engine
# ------------------------------------------------------------------------------------------
def load_video(path: str | None, frames: int, size: str | None):
    """``(frames uint8 (T, H, W, 3), metadata)`` in the form vLLM takes, sampled uniformly."""
    import cv2
    import numpy as np

    if path is None:
        import videoprune

        path = str(Path(videoprune.__file__).parent / "assets" / "sample.mp4")
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = 0
    while cap.grab():  # count first (container frame counts can be wrong), keep only the sampled frames after
        total += 1
    if total < frames:
        raise SystemExit(f"{path}: {total} decodable frames, fewer than --frames {frames}")
    idx = np.linspace(0, total - 1, frames).round().astype(int).tolist()
    cap = cv2.VideoCapture(path)
    wanted, picked = set(idx), {}
    for i in range(idx[-1] + 1):
        if not cap.grab():
            raise SystemExit(f"{path}: frame {i} of {total} could not be read again")
        if i in wanted:
            picked[i] = cv2.cvtColor(cap.retrieve()[1], cv2.COLOR_BGR2RGB)
    video = np.stack([picked[i] for i in idx])
    if size:
        w, h = (int(v) for v in size.lower().split("x"))
        video = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in video])
    meta = {"total_num_frames": total, "fps": float(fps), "duration": total / float(fps),
            "video_backend": "opencv", "frames_indices": idx, "do_sample_frames": False}
    return video, meta


def engine_kwargs(a: argparse.Namespace, method: str) -> dict:
    """vLLM engine arguments for ``method``: the plug-in's ``videoprune`` block, or vLLM's own EVS."""
    kw = dict(model=a.model, dtype=a.dtype, enforce_eager=a.enforce_eager, tensor_parallel_size=a.tensor_parallel_size,
              limit_mm_per_prompt={"video": 1}, enable_prefix_caching=False, mm_processor_cache_gb=0)
    if a.max_model_len:
        kw["max_model_len"] = a.max_model_len
    if a.in_process:
        kw["distributed_executor_backend"] = "uni"
    if method == "vllm-evs":
        kw["video_pruning_rate"] = a.rate
    elif method != "none":
        block = {"method": method, "rate": a.rate}
        if method == "stts":
            block["scorer_path"] = str(Path(a.scorer).resolve())
        kw["hf_overrides"] = {"videoprune": block}
    return kw


async def _one(engine, prompt, params, rid: str) -> tuple[float, float]:
    """(TTFT, latency) of one request, in seconds."""
    t0 = time.perf_counter()
    first = None
    async for out in engine.generate(prompt, params, rid):
        if first is None and out.outputs and out.outputs[0].token_ids:
            first = time.perf_counter()
    return (first or time.perf_counter()) - t0, time.perf_counter() - t0


async def _level(engine, prompt, params, concurrency: int, n: int, tag: str) -> dict:
    sem = asyncio.Semaphore(concurrency)

    async def guarded(i):
        async with sem:
            return await _one(engine, prompt, params, f"{tag}-{i}")

    t0 = time.perf_counter()
    res = await asyncio.gather(*(guarded(i) for i in range(n)))
    wall = time.perf_counter() - t0
    ttft = [r[0] for r in res]
    return dict(concurrency=concurrency, requests=n, wall_s=wall, req_per_s=n / wall,
                ttft_median_s=statistics.median(ttft), ttft_max_s=max(ttft),
                latency_median_s=statistics.median(r[1] for r in res))


async def serve_one_method(a: argparse.Namespace, method: str) -> dict:
    """Start one engine for ``method``, warm it up, and time every concurrency level."""
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    video, meta = load_video(a.video, a.frames, a.size)
    prompt = {"prompt": PROMPT.format(question="What happens in the video?"),
              "multi_modal_data": {"video": (video, meta)}}
    params = SamplingParams(max_tokens=a.max_tokens, temperature=0.0, ignore_eos=True,
                            output_kind=RequestOutputKind.DELTA)
    t0 = time.perf_counter()
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs(a, method)))
    start_s = time.perf_counter() - t0
    try:
        await _level(engine, prompt, params, 1, 2, "warmup")
        levels = [await _level(engine, prompt, params, c, a.rounds * c, f"c{c}") for c in a.levels]
    finally:
        engine.shutdown()
    return dict(method=method, rate=0.0 if method == "none" else a.rate, engine_start_s=start_s, levels=levels)


# ------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------
def run_worker(a: argparse.Namespace) -> None:
    if a.in_process:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    result = asyncio.run(serve_one_method(a, a.worker))
    Path(a.worker_out).write_text(json.dumps(result))


def run_all(a: argparse.Namespace, argv: list[str], out: Path) -> dict:
    """Every method in its own subprocess; the report is rewritten after each, so a failure keeps the others."""
    report = dict(model=a.model, frames=a.frames, size=a.size, max_tokens=a.max_tokens, rounds=a.rounds,
                  device=_device(), results=[])
    with tempfile.TemporaryDirectory() as tmp:
        for i, method in enumerate(a.method_list, 1):
            print(f"[{i}/{len(a.method_list)}] {method}: starting an engine", flush=True)
            res = Path(tmp) / f"{method}.json"
            cmd = [sys.executable, __file__, *argv, "--worker", method, "--worker-out", str(res)]
            proc = subprocess.run(cmd)
            if proc.returncode or not res.exists():
                raise SystemExit(f"method {method}: the engine run failed (exit {proc.returncode}); "
                                 f"the methods before it are in {out}")
            report["results"].append(json.loads(res.read_text()))
            write_report(report, out)
    return report


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(to_markdown(report))


def _device() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - a label only
        return "unknown"


def to_markdown(report: dict) -> str:
    base = {lv["concurrency"]: lv for r in report["results"] if r["method"] == "none" for lv in r["levels"]}
    lines = [f"model `{report['model']}`, {report['frames']} frames, {report['max_tokens']} tokens per request, "
             f"device {report['device']}", "",
             "| method | rate | concurrency | requests | req/s | TTFT median (s) | TTFT max (s) | req/s vs none |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        for lv in r["levels"]:
            ref = base.get(lv["concurrency"])
            ratio = f"{lv['req_per_s'] / ref['req_per_s']:.2f}x" if ref else "-"
            lines.append(f"| {r['method']} | {r['rate']:.2f} | {lv['concurrency']} | {lv['requests']} | "
                         f"{lv['req_per_s']:.2f} | {lv['ttft_median_s']:.3f} | {lv['ttft_max_s']:.3f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.worker:
        run_worker(a)
        return
    out = Path(a.out)
    report = run_all(a, argv, out)
    print(to_markdown(report))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    # the last line is one JSON object (STYLE 11): req/s and median TTFT per method and concurrency
    print(json.dumps({r["method"]: {lv["concurrency"]: {"req_per_s": round(lv["req_per_s"], 4),
                                                          "ttft_median_s": round(lv["ttft_median_s"], 4)}
                                    for lv in r["levels"]} for r in report["results"]}))


if __name__ == "__main__":
    main()
