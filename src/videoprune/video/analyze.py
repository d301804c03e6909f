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
from ..validate import DEFAULT_RATE, check_budget
from .decode import Clip, SamplingConfig, VideoError, VideoLimits, decode, probe, sample_indices
from .preprocess import FamilySpec, VideoTensors, _target_size, get_family, preprocess

__all__ = ["AnalyzeConfig", "AnalysisReport", "MAX_SHEET_FRAMES", "analyze", "analyze_clip", "estimate_analyze_bytes",
           "format_summary", "render_contact_sheet", "sheet_frames"]

CRITERIA = ("pixel", "embedding")
#: most frames a contact sheet draws (evenly spaced past it): its size and drawing time stay bounded
MAX_SHEET_FRAMES = 64
MAX_SLICE_LABELS = 32  # x labels on the per-slice bar chart
SHEET_BYTES = 256 * 2**20  # matplotlib figure + PNG encoder at MAX_SHEET_FRAMES tiles, roughly


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
        self.rate, self.threshold = check_budget(self.rate, self.threshold)
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
    notes: list[str] = field(default_factory=list)  # every cap or shortfall applied, in words

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
        spec = get_family(family)  # None: the default family
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
    sampling, limits = sampling or SamplingConfig(), limits or VideoLimits()
    model = spec = None
    if cfg.criterion == "embedding":  # load first: a bad model id should fail before a long decode
        model, spec = _load_model(cfg.model)
    info = probe(video, limits)
    frames = len(sample_indices(info.total_frames, info.fps, sampling))
    limits.check_memory(info.path, estimate_analyze_bytes(info.width, info.height, frames, spec or get_family()),
                        f"analyzing {frames} frames of {info.width}x{info.height}")
    clip = decode(video, sampling, limits, progress=progress)
    report = analyze_clip(clip, cfg, model=model, family=spec, progress=progress)
    if sampling.num_frames is not None and sampling.num_frames > clip.num_frames:
        report.notes.append(f"asked for {sampling.num_frames} frames; the video has only {clip.total_frames}, "
                            f"so {clip.num_frames} were sampled")
    if write:
        os.makedirs(cfg.out, exist_ok=True)
        stem = os.path.splitext(os.path.basename(str(video)))[0]
        report.png = os.path.join(cfg.out, f"{stem}_evs.png")
        report.json_path = os.path.join(cfg.out, f"{stem}_evs.json")
        render_contact_sheet(clip, report, report.png)
        with open(report.json_path, "w") as f:
            json.dump(report.to_json(), f, indent=2)
    return report


def estimate_analyze_bytes(width: int, height: int, frames: int, spec: FamilySpec) -> int:
    """Peak memory of an analysis, roughly: the decoded frames (uint8) plus about three float32
    copies of them at the model resolution (resized, normalised, patchified) and the sheet."""
    h, w = _target_size(spec, frames, height, width) if spec.layout == "patches" else (spec.size or (height, width))
    return frames * width * height * 3 + 3 * frames * h * w * 3 * 4 + SHEET_BYTES


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
    lines += [f"note         {n}" for n in report.notes]
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


def sheet_frames(num_frames: int, max_tiles: int = MAX_SHEET_FRAMES) -> np.ndarray:
    """Indices of the frames a contact sheet shows: all, or ``max_tiles`` evenly spaced (first and last included)."""
    if num_frames <= max_tiles:
        return np.arange(num_frames)
    return np.floor(np.linspace(0, num_frames - 1, max_tiles) + 0.5).astype(np.int64)


def render_contact_sheet(clip: Clip, report: AnalysisReport, path: str, max_tile_width: int = 320,
                         max_tiles: int = MAX_SHEET_FRAMES) -> str:
    """Write a PNG: the sampled frames with pruned tokens dimmed, then a bar of kept tokens per slice.

    At most ``max_tiles`` frames are drawn (evenly spaced over the clip, first and last
    included), so the sheet's size and the time to draw it stay bounded; when frames are left
    out, the title says so and a note is added to ``report.notes``.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.gridspec import GridSpec  # noqa: PLC0415

    shown = sheet_frames(clip.num_frames, max_tiles)
    n = len(shown)
    if n < clip.num_frames:
        report.notes.append(f"contact sheet shows {n} of {clip.num_frames} sampled frames, evenly spaced "
                            f"(at most {max_tiles} tiles, to bound its size); the counts cover all frames")
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
    for tile, i in enumerate(shown.tolist()):
        ax = fig.add_subplot(gs[tile // cols, tile % cols])
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
    ticks = sheet_frames(report.slices, MAX_SLICE_LABELS)  # a label per slice would be unreadable past a few dozen
    ax.set_xticks(ticks, [f"{s}\n{report.slice_timestamps[s]:.1f}s" for s in ticks.tolist()], fontsize=7)
    ax.set_xlim(-0.6, report.slices - 0.4)
    ax.set_ylabel("tokens", fontsize=8)
    ax.set_xlabel("temporal slice (2 frames each) and its time", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    ax.tick_params(axis="y", labelsize=7)
    name = os.path.basename(report.video) if report.video else "clip"
    capped = f" Showing {n} of {clip.num_frames} frames." if n < clip.num_frames else ""
    fig.suptitle(
        f"{name}: {_mode_text(report)} — {report.tokens_before} → {report.tokens_after} video tokens "
        f"({100 * report.kept_fraction:.0f}% kept). Dimmed cells = pruned tokens (each {report.family} "
        f"token = 2×2 patches × 2 frames).{capped}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path)
    plt.close(fig)
    return path
