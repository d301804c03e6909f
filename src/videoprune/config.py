"""EVSConfig: the user-facing settings of EVS pruning, a validated dataclass (the CLI is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .validate import DEFAULT_RATE, check_budget, check_fraction

__all__ = ["EVSConfig"]

CRITERIA = ("embedding", "pixel", "random")
STAGES = ("post_encoder", "pre_encoder")


@dataclass
class EVSConfig:
    """How EVS prunes video tokens (methods.md §1.1-1.2).

    Give ``rate`` (fixed fraction dropped per video) or ``threshold`` (content-adaptive), not
    both; with neither, ``rate = 0.75``. ``min_keep_fraction`` / ``max_keep_fraction`` clamp
    the threshold mode only; setting them in rate mode is an error, never silently ignored.
    """

    rate: float | None = field(
        default=None,
        metadata={"help": "pruning rate q in [0, 1): each video keeps max(H'W', int(N (1 - q))) tokens. "
                          f"Default {DEFAULT_RATE} when threshold is not given."},
    )
    threshold: float | None = field(
        default=None,
        metadata={"help": "keep tokens whose dissimilarity to the previous temporal slice exceeds this, "
                          ">= 0 (exclusive with rate)."},
    )
    min_keep_fraction: float = field(
        default=0.0, metadata={"help": "threshold mode: keep at least this fraction of each video's tokens."}
    )
    max_keep_fraction: float = field(
        default=1.0, metadata={"help": "threshold mode: keep at most this fraction of each video's tokens."}
    )
    criterion: str = field(
        default="embedding",
        metadata={"help": "'embedding': 1 - cos of LLM-side features; 'pixel': mean |pixel difference| "
                          "(Qwen family only); 'random': uniform random tokens at the same budget "
                          "(a baseline; frame 0 still whole)."},
    )
    seed: int = field(
        default=0, metadata={"help": "criterion='random' only: seed of the random scores (each call "
                                     "draws new ones, reproducibly)."},
    )
    apply_to_images: bool = field(
        default=False, metadata={"help": "also prune image tokens (not supported yet: an image has one "
                                         "temporal slice, which EVS always keeps)."},
    )
    stage: str = field(
        default="post_encoder",
        metadata={"help": "where pruning happens: 'post_encoder' (after the vision encoder) or "
                          "'pre_encoder' (pixel criterion before the encoder, which then runs on kept "
                          "tokens only; Qwen2-VL / Qwen2.5-VL / Qwen3-VL)."},
    )

    def __post_init__(self):
        self.rate, self.threshold = check_budget(self.rate, self.threshold)
        if self.rate is not None:
            if (self.min_keep_fraction, self.max_keep_fraction) != (0.0, 1.0):
                raise ValueError("min_keep_fraction / max_keep_fraction apply to threshold mode only; "
                                 "set threshold instead of rate, or leave them at 0.0 / 1.0")
        for name in ("min_keep_fraction", "max_keep_fraction"):
            setattr(self, name, check_fraction(getattr(self, name), name))
        if self.min_keep_fraction > self.max_keep_fraction:
            raise ValueError(f"min_keep_fraction ({self.min_keep_fraction}) must not exceed "
                             f"max_keep_fraction ({self.max_keep_fraction})")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if not isinstance(self.apply_to_images, bool):
            raise ValueError(f"apply_to_images must be a bool, got {self.apply_to_images!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.stage == "pre_encoder" and self.criterion != "pixel":
            raise ValueError("stage='pre_encoder' selects tokens before the encoder, so it needs "
                             f"criterion='pixel', got criterion={self.criterion!r}")
