"""STTSConfig: the settings of STTS (methods.md §2) as a validated dataclass with help text."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

__all__ = ["STTS_METHODS", "STTSConfig"]

# "learned" is STTS proper; the rest are the baselines of methods.md §2 item 11 (ToMe is not
# implemented: it merges tokens, which the pruning path here does not do).
STTS_METHODS = ("learned", "random", "prev_frame_similarity", "ref_frame_similarity")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _opt(default, help_text: str):
    """A dataclass field with its CLI help text."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class STTSConfig:
    """Settings of STTS: which tokens to score, how many to drop, and with which method.

    Every field carries ``metadata["help"]`` so that a CLI can be built from it. Invalid values
    raise ``ValueError`` naming the field.
    """

    ratio: float = _opt(0.5, "fraction of a video's pooled tokens to drop, in [0, 1); frame 0 is always kept")
    prune_at: int = _opt(3, "ViT block (from 0) whose output the scorer reads; block prune_at+1 gets the key bias, removal follows it")
    mlp_hidden: int = _opt(256, "hidden width of the scorer MLP (2*width -> mlp -> mlp -> 1); the paper's value is not public")
    attn_dim: int = _opt(64, "query/key width of the scorer's attention pool (values are the patches themselves)")
    pool: int | None = _opt(None, "merge window side: one LLM token per pool x pool patches (3 for Molmo2, 2 for Qwen2.5-VL); None = from the model")
    aux_loss_weight: float = _opt(0.5, "weight of the temporal auxiliary loss, weight * MSE(score_t, 1 - cos(f_{t-1}, f_t))")
    method: str = _opt("learned", "token scores: " + " | ".join(STTS_METHODS))
    ref_threshold: float = _opt(0.85, "ref_frame_similarity: a token whose cosine to its reference exceeds this is redundant")
    seed: int = _opt(0, "seed of the random baseline (and of nothing else)")
    scorer_path: str | None = _opt(None, "safetensors file with trained scorer weights; None = freshly initialised scorer")

    def __post_init__(self) -> None:
        if not _is_real(self.ratio) or not (0.0 <= float(self.ratio) < 1.0):
            raise ValueError(f"ratio must be a float in [0, 1), got {self.ratio!r}")
        self.ratio = float(self.ratio)
        if not _is_int(self.prune_at) or self.prune_at < 0:
            raise ValueError(f"prune_at must be an int >= 0, got {self.prune_at!r}")
        for name in ("mlp_hidden", "attn_dim"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.pool is not None and (not _is_int(self.pool) or self.pool < 1):
            raise ValueError(f"pool must be a positive int or None, got {self.pool!r}")
        if not _is_real(self.aux_loss_weight) or float(self.aux_loss_weight) < 0:
            raise ValueError(f"aux_loss_weight must be a finite float >= 0, got {self.aux_loss_weight!r}")
        self.aux_loss_weight = float(self.aux_loss_weight)
        if self.method not in STTS_METHODS:
            raise ValueError(f"method must be one of {STTS_METHODS}, got {self.method!r}")
        if not _is_real(self.ref_threshold) or not (-1.0 <= float(self.ref_threshold) <= 1.0):
            raise ValueError(f"ref_threshold must be a cosine in [-1, 1], got {self.ref_threshold!r}")
        self.ref_threshold = float(self.ref_threshold)
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if self.scorer_path is not None and (not isinstance(self.scorer_path, str) or not self.scorer_path):
            raise ValueError(f"scorer_path must be a non-empty str or None, got {self.scorer_path!r}")

    @classmethod
    def help(cls) -> dict[str, str]:
        """``{field name: help text}``, in declaration order (for building a CLI)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}
