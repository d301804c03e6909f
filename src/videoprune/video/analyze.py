"""`videoprune analyze`: which tokens EVS would keep for a video, as numbers, a JSON report and a contact sheet.

Pixel criterion (default, offline, no model): the clip is preprocessed as for Qwen2-VL (14 px
patches, 2x2 merge, temporal patch 2) and :func:`videoprune.core.pixel_retention_mask` decides per
LLM token. Embedding criterion: a Qwen-family model (``--model``: a path, a hub id or ``default``,
resolved by :func:`videoprune.hub.resolve`) is loaded with ``from_pretrained``, its
``get_video_features`` gives the LLM-side features and :func:`videoprune.core.retention_mask`
(or :func:`~videoprune.core.threshold_mask`) decides.

Counts are per *temporal slice*: one slice is ``temporal_patch_size`` (2) consecutive sampled
frames that share one set of LLM tokens, so a clip of T sampled frames has ceil(T / 2) slices.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..core import pixel_retention_mask, retained_count, retention_mask, threshold_mask
from ..validate import check_rate, check_threshold
from .decode import Clip, SamplingConfig, VideoError, VideoLimits, decode
from .preprocess import FAMILIES, FamilySpec, VideoTensors, get_family, preprocess

__all__ = ["AnalyzeConfig", "AnalysisReport", "analyze", "analyze_clip", "render_contact_sheet", "format_summary"]

DEFAULT_RATE = 0.75
CRITERIA = ("pixel", "embedding")


@dataclass
class AnalyzeConfig:
    """What to analyze and how; the `analyze` subcommand's flags are these fields."""

    rate: float | None = field(
        default=None, metadata={"help": f"EVS pruning rate q in [0, 1) (default {DEFAULT_RATE} unless --threshold)"}
    )
    threshold: float | None = field(
        default=None, metadata={"help": "keep tokens whose dissimilarity exceeds T instead of a fixed rate"}
    )
    criterion: str | None = field(
        default=None,
        metadata={"help": "pixel (offline, default) or embedding (needs --model)", "choices": CRITERIA},
    )
    model: str | None = field(
        default=None, metadata={"help": "HF model id, local path (Qwen2/2.5/3-VL) or 'default' / 'default-uptrained' "
                                        "(the embedded models) for --criterion embedding"}
    )
    out: str = field(default="videoprune-analyze", metadata={"help": "folder for the PNG and JSON report"})

    def __post_init__(self) -> None:
        if self.rate is not None and self.threshold is not None:
            raise ValueError("give either --rate or --threshold, not both")
        if self.rate is not None:
            self.rate = check_rate(self.rate)
        if self.threshold is not None:
            self.threshold = check_threshold(self.threshold)
        if self.rate is None and self.threshold is None:
            self.rate = DEFAULT_RATE
        if self.criterion is None:
            self.criterion = "embedding" if self.model else "pixel"
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        if self.criterion == "embedding" and not self.model:
            raise ValueError("--criterion embedding needs --model ID_OR_PATH")
        if self.criterion == "pixel" and self.model:
            raise ValueError("--model is only used with --criterion embedding")


@dataclass
class AnalysisReport:
    """Result of an analysis; :meth:`to_json` is the JSON report.

    ``kept_per_frame[i]`` is the number of LLM tokens kept in temporal slice i (of
    ``tokens_per_frame``); ``mask`` is the ``(slices, H', W')`` bool keep map (not in the JSON).
    """

    video: str | None
    criterion: str
    rate: float | None
    threshold: float | None
    family: str
    frames: int
    frames_per_slice: int
    slices: int
    tokens_per_frame: int
    merged_grid_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    tokens_before: int
    tokens_after: int
    kept_per_frame: list[int]
    slice_timestamps: list[float]
    frame_timestamps: list[float]
    frame_indices: list[int]
    native_fps: float
    total_frames: int
    mask: torch.Tensor = field(repr=False)
    png: str | None = None
    json_path: str | None = None

    @property
    def kept_fraction(self) -> float:
        return self.tokens_after / self.tokens_before

    @property
    def prefill_saving(self) -> float:
        """Estimated LLM prefill compute saved on the video part: ``1 - after / before``.

        Linear in tokens (the MLP/projection share of prefill); attention's quadratic share saves
        more, text tokens and the vision encoder (not pruned here) save nothing.
        """
        return 1.0 - self.kept_fraction

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("mask")
        d["merged_grid_hw"] = list(self.merged_grid_hw)
        d["resized_hw"] = list(self.resized_hw)
        d["kept_fraction"] = round(self.kept_fraction, 6)
        d["prefill_saving_est"] = round(self.prefill_saving, 6)
        return d


# --------------------------------------------------------------------------------------------
# computing the keep mask
# --------------------------------------------------------------------------------------------
def _pixel_mask(vt: VideoTensors, cfg: AnalyzeConfig) -> torch.Tensor:
    return pixel_retention_mask(
        vt.pixel_values_videos, vt.video_grid_thw, vt.family.merge_size, rate=cfg.rate, threshold=cfg.threshold
    )


def _load_model(model_id: str):
    try:
        from transformers import AutoConfig, AutoModelForImageTextToText  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover
        raise ImportError("--criterion embedding needs transformers: pip install 'videoprune[hf]'") from e
    from ..hub import resolve  # noqa: PLC0415

    path = resolve(model_id)  # 'default' -> the embedded model; a bad path or an unreachable hub fails at once
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load model {model_id!r}: {str(e).splitlines()[0]}") from e
    spec = get_family(config.model_type)  # ValueError for unknown families
    if spec.layout != "patches":
        raise ValueError(f"--criterion embedding supports the Qwen families, not {spec.name}")
    model = AutoModelForImageTextToText.from_pretrained(path, config=config)
    model.eval()
    return model, spec


def _embedding_mask(model, vt: VideoTensors, cfg: AnalyzeConfig, progress: bool) -> torch.Tensor:
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=1, desc="encoding", unit="video", leave=False)
    try:
        with torch.inference_mode():
            dtype = next(model.parameters()).dtype
            out = model.get_video_features(
                pixel_values_videos=vt.pixel_values_videos.to(dtype), video_grid_thw=vt.video_grid_thw
            )
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        if isinstance(feats, (list, tuple)):
            feats = torch.cat(list(feats))
        feats = feats.float()
    finally:
        if bar is not None:
            bar.update(1)
            bar.close()
    merge = vt.family.merge_size
    if cfg.rate is not None:
        return retention_mask(feats, vt.video_grid_thw, merge, cfg.rate)
    return threshold_mask(feats, vt.video_grid_thw, merge, cfg.threshold)


def analyze_clip(clip: Clip, cfg: AnalyzeConfig | None = None, model=None, family: str | FamilySpec | None = None,
                 progress: bool = False) -> AnalysisReport:
    """Analyze frames already decoded. ``model``: a loaded HF model for the embedding criterion."""
    cfg = cfg or AnalyzeConfig()
    if cfg.criterion == "embedding":
        if model is None:
            model, spec = _load_model(cfg.model)
        else:
            spec = get_family(family or model.config.model_type)
    else:
        spec = get_family(family or FAMILIES["qwen2_vl"])
    vt = preprocess(clip, spec)
    mask = _embedding_mask(model, vt, cfg, progress) if cfg.criterion == "embedding" else _pixel_mask(vt, cfg)
    t, gh, gw = (int(v) for v in vt.video_grid_thw[0])
    m = spec.merge_size
    hw = (gh // m) * (gw // m)
    grid_mask = mask.reshape(t, gh // m, gw // m).cpu()
    kept = grid_mask.reshape(t, hw).sum(1).tolist()
    tokens_after = int(mask.sum())
    if cfg.rate is not None and tokens_after != retained_count(hw, t, cfg.rate):
        raise RuntimeError(f"kept {tokens_after} tokens, the core's retained_count says {retained_count(hw, t, cfg.rate)}")
    return AnalysisReport(
        video=clip.path,
        criterion=cfg.criterion,
        rate=cfg.rate,
        threshold=cfg.threshold,
        family=spec.name,
        frames=clip.num_frames,
        frames_per_slice=spec.temporal_patch_size,
        slices=t,
        tokens_per_frame=hw,
        merged_grid_hw=(gh // m, gw // m),
        resized_hw=vt.resized_hw,
        tokens_before=t * hw,
        tokens_after=tokens_after,
        kept_per_frame=[int(k) for k in kept],
        slice_timestamps=[round(x, 4) for x in vt.grid_timestamps],
        frame_timestamps=[round(float(x), 4) for x in clip.timestamps],
        frame_indices=[int(i) for i in clip.indices],
        native_fps=round(clip.fps, 4),
        total_frames=clip.total_frames,
        mask=grid_mask,
    )


def analyze(
    video,
    cfg: AnalyzeConfig | None = None,
    sampling: SamplingConfig | None = None,
    limits: VideoLimits | None = None,
    progress: bool = False,
    write: bool = True,
) -> AnalysisReport:
    """Decode ``video`` (a path), compute the EVS keep map, and (``write``) save PNG + JSON under ``cfg.out``."""
    cfg = cfg or AnalyzeConfig()
    model = spec = None
    if cfg.criterion == "embedding":  # load first: a bad model id should fail before a long decode
        model, spec = _load_model(cfg.model)
    clip = decode(video, sampling or SamplingConfig(), limits, progress=progress)
    report = analyze_clip(clip, cfg, model=model, family=spec, progress=progress)
    if write:
        os.makedirs(cfg.out, exist_ok=True)
        stem = os.path.splitext(os.path.basename(str(video)))[0]
        report.png = os.path.join(cfg.out, f"{stem}_evs.png")
        report.json_path = os.path.join(cfg.out, f"{stem}_evs.json")
        render_contact_sheet(clip, report, report.png)
        with open(report.json_path, "w") as f:
            json.dump(report.to_json(), f, indent=2)
    return report


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _mode_text(report: AnalysisReport) -> str:
    what = f"rate q={report.rate:g}" if report.rate is not None else f"threshold {report.threshold:g}"
    return f"EVS {report.criterion} criterion, {what}"


def format_summary(report: AnalysisReport) -> str:
    """Readable multi-line summary of a report."""
    lines = [
        f"video        {report.video}",
        f"sampled      {report.frames} of {report.total_frames} frames ({report.native_fps:g} fps native), "
        f"{report.slices} temporal slices of {report.frames_per_slice} frames",
        f"grid         {report.resized_hw[1]}x{report.resized_hw[0]} px -> "
        f"{report.merged_grid_hw[1]}x{report.merged_grid_hw[0]} = {report.tokens_per_frame} tokens per slice "
        f"({report.family} layout)",
        f"selection    {_mode_text(report)}",
        f"tokens       {report.tokens_before} -> {report.tokens_after} "
        f"(kept {100 * report.kept_fraction:.1f}%, pruned {report.tokens_before - report.tokens_after})",
        f"est. saving  ~{100 * report.prefill_saving:.0f}% of LLM prefill compute on the video tokens "
        "(linear estimate; the vision encoder is not reduced)",
        "kept per slice (time: kept/total):",
    ]
    per = [
        f"  {t:6.2f}s {k:>5}/{report.tokens_per_frame}{'  (first slice: always kept)' if i == 0 else ''}"
        for i, (t, k) in enumerate(zip(report.slice_timestamps, report.kept_per_frame))
    ]
    lines += per
    if report.png:
        lines.append(f"contact sheet {report.png}")
    if report.json_path:
        lines.append(f"json report   {report.json_path}")
    return "\n".join(lines)


def _dimmed_frame(frame: np.ndarray, keep: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Frame resized to the model resolution, pruned token cells darkened and desaturated."""
    from PIL import Image  # noqa: PLC0415

    h, w = size_hw
    img = np.asarray(Image.fromarray(frame).resize((w, h), resample=Image.Resampling.BICUBIC)).astype(np.float32)
    cell = np.kron(keep.astype(np.float32), np.ones((h // keep.shape[0], w // keep.shape[1]), np.float32))
    gray = img.mean(-1, keepdims=True)
    dim = 0.25 * (0.3 * img + 0.7 * gray) + 20
    out = cell[..., None] * img + (1 - cell[..., None]) * dim
    return out.clip(0, 255).astype(np.uint8)


def render_contact_sheet(clip: Clip, report: AnalysisReport, path: str, max_tile_width: int = 320) -> str:
    """Write a PNG: every sampled frame with pruned tokens dimmed, then a bar of kept tokens per slice."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.gridspec import GridSpec  # noqa: PLC0415

    n = clip.num_frames
    cols = min(n, 4 if n <= 8 else 6)
    rows = math.ceil(n / cols)
    h, w = report.resized_hw
    aspect = h / w
    tile_w = 3.2
    fig_w = cols * tile_w
    tiles_h = rows * (tile_w * aspect + 0.45)
    bar_h = 2.2
    fig = plt.figure(figsize=(fig_w, tiles_h + bar_h + 0.9), dpi=100)
    gs = GridSpec(rows + 1, cols, figure=fig, height_ratios=[tile_w * aspect + 0.45] * rows + [bar_h])
    mask = report.mask.numpy()
    tp = report.frames_per_slice
    for i in range(n):
        ax = fig.add_subplot(gs[i // cols, i % cols])
        s = i // tp
        ax.imshow(_dimmed_frame(clip.frames[i], mask[s], (h, w)))
        kept = report.kept_per_frame[s]
        note = "kept whole (first)" if s == 0 else f"kept {kept}/{report.tokens_per_frame}"
        ax.set_title(f"{clip.timestamps[i]:.2f}s · slice {s} · {note}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_color("#2a9d8f" if s % 2 == 0 else "#e76f51")
            sp.set_linewidth(2)
    ax = fig.add_subplot(gs[rows, :])
    x = np.arange(report.slices)
    ax.bar(x, [report.tokens_per_frame] * report.slices, color="#dddddd", label="tokens per slice (before)")
    ax.bar(x, report.kept_per_frame, color="#2a9d8f", label="kept by EVS")
    ax.set_xticks(x, [f"{s}\n{t:.1f}s" for s, t in zip(x, report.slice_timestamps)], fontsize=7)
    ax.set_xlim(-0.6, report.slices - 0.4)
    ax.set_ylabel("tokens", fontsize=8)
    ax.set_xlabel("temporal slice (2 frames each) and its time", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    ax.tick_params(axis="y", labelsize=7)
    name = os.path.basename(report.video) if report.video else "clip"
    fig.suptitle(
        f"{name}: {_mode_text(report)} — {report.tokens_before} → {report.tokens_after} video tokens "
        f"({100 * report.kept_fraction:.0f}% kept). Dimmed cells = pruned tokens (each {report.family} "
        "token = 2×2 patches × 2 frames)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path)
    plt.close(fig)
    return path
