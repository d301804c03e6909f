"""`videoprune bench accuracy`: accuracy vs kept-token fraction on the synthetic temporal video-QA.

Every method sees the same freshly generated test clips (``--seed``/``--num``, the ``test``
split, never used for training or calibration) through the same code path a user would take:
video files -> :func:`videoprune.video.prepare_inputs` -> a patched model -> the first answer
token (greedy). Methods, each at the kept fractions asked for:

- ``none``: unpruned (fraction 1 only) — the reference accuracy.
- ``evs``: EVS rate mode, embedding criterion (what vLLM/SGLang serve).
- ``evs-pixel``: EVS on raw pixels, after the encoder.
- ``evs-pre``: EVS on raw pixels before the encoder (``stage="pre_encoder"``).
- ``evs-threshold``: EVS threshold mode; the threshold for each fraction is calibrated on
  ``--calibration-num`` clips of the ``val`` split (default ``min(100, --num)``; their features
  are computed once for all fractions) so that the mean kept fraction matches.
- ``random``: uniformly random tokens at EVS's budget (frame 0 whole).
- ``uniform``: uniform frame subsampling at equal budget (fewer frames decoded).
- ``stts``: the learned STTS scorer (needs a trained scorer).
- ``uptrained``: an EVS-uptrained model with EVS at the same rate.

Outputs go to ``--out`` or, by default, a fresh ``./videoprune-out/accuracy-YYYYmmdd-HHMMSS``:
``accuracy.json`` (the full report: ``results`` of ``{method, kept_fraction,
kept_fraction_measured, accuracy, per_type, n}`` plus the config), ``accuracy.png`` and the
generated clips. The CLI's last stdout line is one compact JSON object (:func:`summary`):
``results`` of ``{method, kept_fraction, kept_fraction_measured, accuracy}`` and the report's path.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..methods import get_method, method_names, uniform_frames

__all__ = ["AccuracyConfig", "METHODS", "run_accuracy", "summary", "evaluate", "read_records", "method_config"]

#: the methods this benchmark runs (the methods table's, see :mod:`videoprune.methods`)
METHODS = method_names("accuracy")


def _csv_floats(text) -> tuple[float, ...]:
    return tuple(float(x) for x in str(text).split(",") if x.strip()) if not isinstance(text, tuple) else text


#: most val clips evs-threshold is calibrated on by default (fewer when --num is smaller)
CALIBRATION_MAX = 100


@dataclass
class AccuracyConfig:
    """Settings of the accuracy benchmark (the CLI flags are built from these fields)."""

    model: str = field(default="default", metadata={
        "help": "model path or hub id (default: 'default' = the embedded model)"})
    uptrained: str | None = field(default="default-uptrained", metadata={
        "help": "EVS-uptrained checkpoint for method 'uptrained' ('none' to skip) (default: 'default-uptrained' = "
                "embedded)"})
    stts_scorer: str | None = field(default="default", metadata={
        "help": "STTS scorer weights (safetensors) for method 'stts' ('none' to skip) (default: 'default' = embedded)"})
    methods: str = field(default=",".join(METHODS), metadata={
        "help": "comma-separated methods (default: all of " + ", ".join(METHODS) + ")"})
    fractions: str = field(default="1,0.5,0.25,0.1", metadata={
        "help": "comma-separated kept-token fractions in (0, 1] (default: 1,0.5,0.25,0.1)"})
    seed: int = field(default=0, metadata={
        "help": "seed of the generated test set (test split: never trained on) (default: 0)"})
    num: int = field(default=200, metadata={"help": "number of test clips (default: 200)"})
    calibration_num: int | None = field(default=None, metadata={
        "help": f"val clips used to calibrate evs-threshold (default: min({CALIBRATION_MAX}, --num))"})
    batch_size: int = field(default=20, metadata={"help": "clips per forward pass (default: 20)"})
    out: str | None = field(default=None, metadata={
        "help": "output folder for accuracy.json (the full report), accuracy.png and data/, overwriting those "
                "(default: a fresh folder ./videoprune-out/accuracy-YYYYmmdd-HHMMSS)"})
    data_dir: str | None = field(default=None, metadata={"help": "where test clips are written (default: OUT/data)"})

    def __post_init__(self):
        self.method_list = tuple(m.strip() for m in self.methods.split(",") if m.strip())
        bad = [m for m in self.method_list if m not in METHODS]
        if bad or not self.method_list:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {self.methods!r}")
        self.fraction_list = _csv_floats(self.fractions)
        if not self.fraction_list or any(not 0.0 < f <= 1.0 for f in self.fraction_list):
            raise ValueError(f"fractions must be in (0, 1], got {self.fractions!r}")
        if self.calibration_num is None and isinstance(self.num, int):
            # a short run gets a short calibration: 100 val clips cost more than 20 test clips x 9 methods
            self.calibration_num = min(CALIBRATION_MAX, self.num)
        for name in ("num", "calibration_num", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, bundle, records, *, cfg=None, num_frames: int | None = None, batch_size: int = 20, progress=None,
             answers: list | None = None):
    """Accuracy of ``model`` (optionally patched with ``cfg``) on ``records``.

    Args:
        bundle: :class:`videoprune.assets.ModelBundle`-like object with ``tokenizer`` and
            ``inputs(video_path, question, num_frames=None)``.
        records: dicts with ``video`` (absolute path), ``question``, ``answer``, ``type``.
        cfg: an EVSConfig / STTSConfig to patch with, or None for the unpruned model.
        num_frames: decode this many frames instead of the model's default (uniform baseline).
        answers: when a list, each record's predicted answer is appended to it, in order (so other
            harnesses can be checked against this one clip by clip).

    Returns: ``(accuracy, per_type, kept_fraction_measured)``.
    """
    import videoprune

    handle = videoprune.patch(model, cfg) if cfg is not None else None
    correct, per_type = [], defaultdict(list)
    before = after = 0
    try:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            batch = bundle.collate([bundle.inputs(r["video"], r["question"], num_frames=num_frames) for r in chunk])
            n_video = int((batch["input_ids"] == model.config.video_token_id).sum())
            logits = model(**batch).logits[:, -1]
            if handle is not None and handle.stats is not None:
                before += handle.stats.tokens_before
                after += handle.stats.tokens_after
            else:
                # fewer frames decoded (uniform baseline): the budget is relative to the full clip
                full = n_video * bundle.num_frames // num_frames if num_frames else n_video
                before += full
                after += n_video
            pred = logits.argmax(-1).tolist()
            for r, p in zip(chunk, pred):
                ok = bundle.decode_token(p) == r["answer"]
                if answers is not None:
                    answers.append(bundle.decode_token(p))
                correct.append(ok)
                per_type[r["type"]].append(ok)
            if progress is not None:
                progress.update(len(chunk))
    finally:
        if handle is not None:
            handle.remove()
    acc = sum(correct) / len(correct)
    return acc, {k: sum(v) / len(v) for k, v in sorted(per_type.items())}, after / max(before, 1)


def calibration_dissimilarities(model, bundle, records, progress=None) -> list[torch.Tensor]:
    """Per val clip, the EVS embedding dissimilarities of its video tokens (``+inf`` on frame 0).

    One vision-encoder pass per clip, from the model's own video features and core.evs; computed
    once and shared by every calibrated fraction. ``progress``: a tqdm bar advanced per clip.
    """
    from ..core.evs import embedding_dissimilarity

    ds = []
    with torch.no_grad():
        for r in records:
            inp = bundle.inputs(r["video"], r["question"])
            feats = model.model.get_video_features(inp["pixel_values_videos"], inp["video_grid_thw"]).pooler_output
            feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
            merge = model.config.vision_config.spatial_merge_size
            ds.append(embedding_dissimilarity(feats, inp["video_grid_thw"], merge))
            if progress is not None:
                progress.update(1)
    return ds


def threshold_for_fraction(ds: list[torch.Tensor], fraction: float) -> float:
    """Threshold tau whose mean kept fraction over the clips' dissimilarities ``ds`` is closest to ``fraction``.

    A token is kept when its dissimilarity exceeds tau (frame 0's ``+inf`` always is); the mean
    is over clips, each clip's kept fraction weighted alike.
    """
    def kept(tau: float) -> float:
        return sum(float(((d > tau) | torch.isinf(d)).float().mean()) for d in ds) / len(ds)

    lo, hi = 0.0, 2.0
    for _ in range(40):  # kept(tau) is non-increasing in tau
        mid = (lo + hi) / 2
        if kept(mid) > fraction:
            lo = mid
        else:
            hi = mid
    return hi if abs(kept(hi) - fraction) <= abs(kept(lo) - fraction) else lo


def calibrate_threshold(model, bundle, records, fraction: float) -> float:
    """Threshold tau whose mean kept fraction over ``records`` (val split) is closest to ``fraction``.

    Uses the model's own video features and core.evs dissimilarities (frame 0 always kept).
    """
    return threshold_for_fraction(calibration_dissimilarities(model, bundle, records), fraction)


# --------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------
def method_config(method: str, rate: float, bundle, *, seed: int = 0, scorer: str = "default",
                  threshold: float | None = None):
    """What ``method`` at drop ``rate`` means for ``bundle``: ``(patch cfg or None, frames to decode or None)``.

    A thin reading of the methods table (:mod:`videoprune.methods`), shared by this benchmark
    and the lmms-eval plug-in (:mod:`videoprune.integrations.pruned_qa`), so both run a method
    alike. ``rate`` in [0, 1) is the fraction of video tokens dropped; ``uniform`` keeps
    ``1 - rate`` of the temporal slices (2 frames each, at least one slice) of
    ``bundle.num_frames``; a ``threshold`` replaces ``rate`` for the methods that take one
    (``evs-threshold`` needs it); ``stts`` loads ``scorer`` ('default' = the one beside the
    model). ``none`` is ``(None, None)``; ``uptrained`` is a different checkpoint, not a method
    of this one, so it is refused here.
    """
    m = get_method(method, "eval")
    if m.kind == "frames":
        return None, uniform_frames(bundle.num_frames, rate)
    budget = None if threshold is not None else rate
    return m.bundle_config(bundle, budget, threshold=threshold, seed=seed, scorer=scorer), None


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
def read_records(jsonl: str | Path) -> list[dict]:
    """The lines of a QA JSONL (as `write_dataset` writes it) with each ``video`` made an absolute path."""
    jsonl = Path(jsonl)
    out = []
    for line in jsonl.read_text().splitlines():
        r = json.loads(line)
        r["video"] = str((jsonl.parent / r["video"]).resolve())
        out.append(r)
    return out


def _dataset(folder: Path, split: str, num: int, seed: int, bundle) -> list[dict]:
    from ..data.synthetic import write_dataset

    jsonl = folder / f"{split}.jsonl"
    if not jsonl.exists() or len(jsonl.read_text().splitlines()) != num:
        write_dataset(folder, split, num, seed, num_frames=bundle.num_frames, size=bundle.frame_size, fps=bundle.fps)
    return read_records(jsonl)


def _job(cfg: AccuracyConfig, m, f: float, model, bundle) -> tuple | None:
    """One run of method ``m`` at kept fraction ``f``: ``(name, f, model, patch cfg, num_frames)``, or None to skip.

    Every method is the unpruned model at fraction 1, so only ``none`` runs there (and only
    there). ``patch cfg`` is ``"calibrate"`` for a method that needs a threshold (found on val
    clips to keep ``f``); the model ``"uptrained"`` stands for that checkpoint, loaded when its
    turn comes. ``stts`` / ``uptrained`` are skipped when their weights are set to 'none'.
    """
    if m.kind == "none" or f == 1.0:
        return (m.name, f, model, None, None) if m.kind == "none" and f == 1.0 else None
    if m.threshold == "required":
        return m.name, f, model, "calibrate", None
    if m.kind == "checkpoint":
        return None if cfg.uptrained in (None, "none") else (m.name, f, "uptrained", get_method("evs").config(1.0 - f), None)
    if m.kind == "stts" and cfg.stts_scorer in (None, "none"):
        return None
    return (m.name, f, model, *method_config(m.name, 1.0 - f, bundle, seed=cfg.seed, scorer=cfg.stts_scorer))


def run_accuracy(cfg: AccuracyConfig, progress: bool = True) -> dict:
    """Run every method at every fraction; write JSON + PNG under the output folder; return the report.

    The folder is ``cfg.out``, or a fresh ``./videoprune-out/accuracy-YYYYmmdd-HHMMSS`` without
    one (its path is the report's ``out``). One progress bar (on stderr, ``progress``) counts
    every clip pass: the evs-threshold calibration clips, then each (method, fraction)'s test clips.
    """
    import sys

    from tqdm.auto import tqdm

    from ..bundle import load_bundle
    from .outdir import fresh_dir

    if cfg.out is None:
        out = fresh_dir("accuracy")
    else:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(cfg.model)
    model = bundle.model
    data = Path(cfg.data_dir) if cfg.data_dir else out / "data"
    test = _dataset(data / f"test-seed{cfg.seed}", "test", cfg.num, cfg.seed, bundle)

    jobs = [job for method in cfg.method_list for f in cfg.fraction_list
            if (job := _job(cfg, get_method(method, "accuracy"), f, model, bundle)) is not None]
    calibrated = any(pcfg == "calibrate" for *_, pcfg, _ in jobs)
    total = len(jobs) * len(test) + (cfg.calibration_num if calibrated else 0)
    bar = tqdm(total=total, desc="accuracy", unit="clip", disable=not progress, file=sys.stderr)
    uptrained = None
    ds = None
    results = []
    for method, f, mdl, pcfg, frames in jobs:
        if mdl == "uptrained":
            if uptrained is None:
                uptrained = load_bundle(cfg.uptrained)
            mdl = uptrained.model
        if pcfg == "calibrate":
            if ds is None:  # once for every fraction: the features do not depend on it
                bar.set_description(f"accuracy: calibrating evs-threshold ({cfg.calibration_num} val clips)")
                calibration = _dataset(data / f"val-seed{cfg.seed}", "val", cfg.calibration_num, cfg.seed, bundle)
                ds = calibration_dissimilarities(model, bundle, calibration, progress=bar)
            pcfg = get_method(method, "accuracy").config(threshold=threshold_for_fraction(ds, f))
        bar.set_description(f"accuracy: {method} {f:.0%}")
        acc, per_type, measured = evaluate(mdl, bundle, test, cfg=pcfg, num_frames=frames,
                                           batch_size=cfg.batch_size, progress=bar)
        entry = {"method": method, "kept_fraction": f, "kept_fraction_measured": round(measured, 4),
                 "accuracy": acc, "per_type": per_type, "n": len(test)}
        if get_method(method).threshold == "required":
            entry["threshold"] = pcfg.threshold
        results.append(entry)
    bar.close()

    report = {"benchmark": "accuracy", "model": cfg.model, "seed": cfg.seed, "num": cfg.num,
              "calibration_num": cfg.calibration_num if calibrated else 0, "out": str(out),
              "config": {k: v for k, v in asdict(cfg).items()}, "results": results}
    (out / "accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(results, out / "accuracy.png")
    return report


def summary(report: dict) -> dict:
    """The compact result the CLI prints as its last stdout line: per (method, fraction) accuracy and
    measured kept fraction, and where the full report (per-type accuracies, thresholds, config) is."""
    out = Path(report["out"])
    return {"bench": "accuracy", "model": report["model"], "seed": report["seed"], "num": report["num"],
            "calibration_num": report["calibration_num"], "report": str(out / "accuracy.json"),
            "plot": str(out / "accuracy.png"),
            "results": [{k: r[k] for k in ("method", "kept_fraction", "kept_fraction_measured", "accuracy")}
                        for r in report["results"]]}


def format_table(results: list[dict]) -> str:
    """Method x kept fraction accuracy table, plus per-type accuracy."""
    fractions = sorted({r["kept_fraction"] for r in results}, reverse=True)
    methods = list(dict.fromkeys(r["method"] for r in results))
    cell = {(r["method"], r["kept_fraction"]): r for r in results}
    lines = ["method          " + "".join(f"{f:>9.0%}" for f in fractions)]
    for m in methods:
        row = "".join(f"{cell[(m, f)]['accuracy']:>9.1%}" if (m, f) in cell else f"{'':>9}" for f in fractions)
        lines.append(f"{m:<16}{row}")
    types = sorted({t for r in results for t in r["per_type"]})
    lines.append("")
    lines.append("per question type (method @ kept fraction): " + ", ".join(types))
    for r in results:
        lines.append(f"  {r['method']:<14} {r['kept_fraction']:>5.0%} (measured {r['kept_fraction_measured']:.1%}): "
                     + "  ".join(f"{r['per_type'].get(t, math.nan):.2f}" for t in types))
    return "\n".join(lines)


def _series(results: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Per method, its (measured kept fraction, accuracy) points in ascending kept fraction.

    Every method but ``uptrained`` (whose unpruned accuracy is not the default model's) ends at
    the unpruned point (1.0, accuracy of ``none``), which is appended before sorting so the line
    runs 10% -> 25% -> 50% -> 100%.
    """
    ref = next((r["accuracy"] for r in results if r["method"] == "none"), None)
    out = {}
    for method in dict.fromkeys(r["method"] for r in results):
        if method == "none":
            continue
        pts = [(r["kept_fraction_measured"], r["accuracy"]) for r in results if r["method"] == method]
        if ref is not None and method != "uptrained":
            pts.append((1.0, ref))
        out[method] = sorted(pts)
    return out


def _plot(results: list[dict], path: Path, title: str = "synthetic temporal video-QA: accuracy vs kept tokens") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ref = next((r["accuracy"] for r in results if r["method"] == "none"), None)
    for method, pts in _series(results).items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    if ref is not None:
        ax.axhline(ref, color="grey", ls="--", lw=1, label="unpruned")
    ax.set_xlabel("kept video-token fraction (measured)")
    ax.set_ylabel("accuracy")
    ax.set_xscale("log")
    ax.set_xticks([0.1, 0.25, 0.5, 1.0], labels=["10%", "25%", "50%", "100%"])
    ax.xaxis.set_minor_formatter(NullFormatter())  # the log axis would label 2x10^-1 etc. over the percentages
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
