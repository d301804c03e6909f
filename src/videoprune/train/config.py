"""TrainConfig: every setting of ``videoprune train`` as one validated dataclass (the CLI is built from it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..methods import method_names
from ..models.registry import FAMILIES as _FAMILIES
from ..validate import check_num_frames, check_pixel_budget, check_rate
from .rates import RateDistribution

__all__ = ["TrainConfig", "TINY_MODELS"]

#: the methods ``train`` offers (the methods table's, see :mod:`videoprune.methods`)
METHODS = method_names("train")
PRECISIONS = ("auto", "fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")
ATTENTION = ("eager", "sdpa")
SCHEDULES = ("constant", "linear", "cosine")
BAD_VIDEO = ("skip", "error")
#: ``--model tiny:<family>``: a built-in random tiny model + word tokenizer (tests, smoke runs), one per
#: family record that offers a training tiny model (``Family.train_tiny``)
TINY_MODELS = tuple(f"tiny:{f.name}" for f in _FAMILIES if f.train_tiny is not None)


def _h(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class TrainConfig:
    """How to fine-tune a video VLM with pruning on (EVS uptraining or STTS training).

    Sizes are per rank: one optimizer step consumes ``batch_size * grad_accum`` samples on
    each of the ``world_size`` ranks.
    """

    data: str = field(default="", metadata=_h("training JSONL: one {video, question, answer[, timestamps]} per "
                                              "line; video paths relative to the JSONL file"))
    model: str = field(default="", metadata=_h("HF checkpoint path or hub id (from_pretrained), 'default' / "
                                               "'default-uptrained' (the embedded models), or a built-in "
                                               f"tiny random model: {', '.join(TINY_MODELS)}"))
    output_dir: str = field(default="", metadata=_h("where checkpoints, logs (CSV, TensorBoard) and the export go"))
    tokenizer: str | None = field(default=None, metadata=_h("tokenizer path/id (default: the model's)"))
    method: str = field(default="evs", metadata=_h("evs: EVS on, rate drawn per step; stts: learned STTS scorer",
                                                   choices=METHODS))
    rate_dist: str = field(default="fixed:0.75", metadata=_h("EVS rate per step: fixed:q | uniform:a,b | "
                                                             "beta:alpha,beta,max (max * Beta(alpha, beta))"))
    export_rate: float | None = field(default=None, metadata=_h(
        "video_pruning_rate written to the exported config (the serving rate); default: q of fixed:q; "
        "required for stochastic rate distributions"))
    stts_ratio: float = field(default=0.5, metadata=_h("stts: fraction of pooled video tokens dropped"))
    stts_aux_weight: float = field(default=0.5, metadata=_h("stts: coefficient of the temporal auxiliary loss"))
    stts_prune_at: int = field(default=3, metadata=_h("stts: ViT block (from 0) whose output the scorer reads "
                                                       "(STTSConfig.prune_at; at most encoder depth - 2)"))
    train_base: bool = field(default=False, metadata=_h("stts: also train the base model, fully or with --lora "
                                                        "(default: frozen, only the scorer trains)"))
    lora: bool = field(default=False, metadata=_h("train LoRA adapters (peft) on the language model instead of "
                                                  "all weights; merged at export"))
    lora_r: int = field(default=16, metadata=_h("LoRA rank"))
    lora_alpha: float = field(default=32.0, metadata=_h("LoRA alpha"))
    lora_dropout: float = field(default=0.0, metadata=_h("LoRA dropout"))
    lora_targets: str = field(default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                              metadata=_h("comma-separated module names of the language model to adapt"))
    lr: float = field(default=1e-5, metadata=_h("peak learning rate (AdamW)"))
    weight_decay: float = field(default=0.0, metadata=_h("AdamW weight decay"))
    warmup_steps: int = field(default=0, metadata=_h("linear warm-up steps"))
    schedule: str = field(default="cosine", metadata=_h("learning-rate schedule after warm-up", choices=SCHEDULES))
    max_grad_norm: float = field(default=1.0, metadata=_h("clip the gradient norm to this (0: no clipping)"))
    epochs: int = field(default=1, metadata=_h("passes over the data (ignored when max_steps is set)"))
    max_steps: int | None = field(default=None, metadata=_h("optimizer steps to run (default: epochs' worth)"))
    batch_size: int = field(default=1, metadata=_h("samples per micro-batch per rank"))
    grad_accum: int = field(default=1, metadata=_h("micro-batches accumulated per optimizer step"))
    precision: str = field(default="auto", metadata=_h("auto: bf16 autocast on CUDA with bf16 support, fp32 "
                                                       "otherwise; bf16 forces autocast (also on CPU)",
                                                       choices=PRECISIONS))
    attn_implementation: str | None = field(default=None, metadata=_h(
        "transformers attention kernel: eager or sdpa (default: the model's own choice). On CPU, eager is "
        "faster for small models with short sequences (see docs/train.md)", choices=ATTENTION))
    strategy: str = field(default="ddp", metadata=_h("under torchrun: ddp (replicated) or fsdp (sharded)",
                                                     choices=STRATEGIES))
    device: str | None = field(default=None, metadata=_h("cpu or cuda (default: cuda when available)"))
    seed: int = field(default=0, metadata=_h("seed of data order, rates and initialisation"))
    num_frames: int | None = field(default=None, metadata=_h("frames sampled per video (default: 2 fps)"))
    fps: float | None = field(default=None, metadata=_h("frames per second sampled (exclusive with num_frames)"))
    max_frames: int = field(default=32, metadata=_h("never sample more frames than this"))
    min_pixels: int | None = field(default=None, metadata=_h("per-frame pixel budget, lower bound (family default)"))
    max_pixels: int | None = field(default=None, metadata=_h("per-frame pixel budget, upper bound (family default)"))
    on_bad_video: str = field(default="error", metadata=_h("a missing/unreadable video: error (stop, naming the "
                                                           "JSONL line) or skip (drop the line, report it)",
                                                           choices=BAD_VIDEO))
    num_workers: int = field(default=0, metadata=_h("DataLoader worker processes decoding videos"))
    save_every: int = field(default=0, metadata=_h("save a checkpoint every N optimizer steps (0: only at the end)"))
    resume: str | None = field(default=None, metadata=_h("checkpoint directory to resume from, or 'auto' "
                                                         "(newest complete checkpoint under output_dir that loads)"))
    overwrite: bool = field(default=False, metadata=_h("start over in a non-empty output_dir: first delete the files "
                                                       "a run writes there (metrics.csv, tb/, checkpoints/, export/); "
                                                       "without it (or --resume) such a folder is refused"))
    confine_videos: bool = field(default=False, metadata=_h(
        "refuse JSONL video paths that resolve (symlinks followed) outside the JSONL file's folder; default: "
        "videos may be anywhere the JSONL points (see docs/train.md)"))
    log_every: int = field(default=1, metadata=_h("write CSV/TensorBoard rows every N steps"))
    no_export: bool = field(default=False, metadata=_h("do not write the HF checkpoint at the end"))

    def __post_init__(self):
        for name in ("data", "model", "output_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} is required (--{name.replace('_', '-')})")
        for name, allowed in (("method", METHODS), ("precision", PRECISIONS), ("strategy", STRATEGIES),
                              ("schedule", SCHEDULES), ("on_bad_video", BAD_VIDEO)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self.rate_distribution  # validates rate_dist
        for name in ("lora_r", "epochs", "batch_size", "grad_accum", "max_frames", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("warmup_steps", "save_every", "num_workers", "seed", "stts_prune_at"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            raise ValueError(f"max_steps must be an int >= 1, got {self.max_steps!r}")
        for name in ("lr", "weight_decay", "max_grad_norm", "lora_alpha", "lora_dropout", "stts_aux_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        check_rate(self.stts_ratio, "stts_ratio")  # the validators EVSConfig, ask and analyze use too
        if self.export_rate is not None:
            check_rate(self.export_rate, "export_rate")
        if (self.method == "evs" and not self.no_export and self.export_rate is None
                and not self.rate_distribution.is_fixed):
            raise ValueError(f"export_rate is required with the stochastic rate_dist {self.rate_dist!r}: "
                             "give the rate the exported model will be served at (--export-rate)")
        if self.attn_implementation is not None and self.attn_implementation not in ATTENTION:
            raise ValueError(f"attn_implementation must be one of {ATTENTION} or None, got {self.attn_implementation!r}")
        check_pixel_budget(self.min_pixels, self.max_pixels)
        if self.num_frames is not None:  # sampling refuses more than max_frames: say so before loading anything
            check_num_frames(self.num_frames, upper=self.max_frames)
        if self.overwrite and self.resume:
            raise ValueError("give either resume (continue the run in output_dir) or overwrite (delete it and start "
                             "over), not both")
        if self.num_frames is not None and self.fps is not None:
            raise ValueError("give either num_frames or fps, not both")
        if self.device is not None and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {self.device!r}")
        if self.method == "evs" and self.train_base:
            raise ValueError("train_base is a method='stts' setting (EVS uptraining always trains the base model)")
        if self.method == "stts" and self.lora and not self.train_base:
            raise ValueError("lora with method='stts' trains the base model: add train_base (--train-base), or drop "
                             "lora to train the scorer alone")
        if self.method == "stts" and self.strategy == "fsdp":
            raise ValueError("strategy='fsdp' with method='stts' is not supported (the STTS vision driver calls the "
                             "encoder blocks itself and has not been run under FSDP); use strategy='ddp'")
        if self.strategy == "fsdp" and self.lora:
            raise ValueError("strategy='fsdp' with lora is not supported (LoRA merge at export needs the whole "
                             "model on one rank); use strategy='ddp' with lora")

    @property
    def rate_distribution(self) -> RateDistribution:
        return RateDistribution.parse(self.rate_dist)

    @property
    def serving_rate(self) -> float | None:
        """The rate recorded as ``video_pruning_rate`` at export (EVS only)."""
        if self.method != "evs":
            return None
        return float(self.export_rate) if self.export_rate is not None else self.rate_distribution.mean
