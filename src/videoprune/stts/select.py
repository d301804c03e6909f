"""Hard STTS selection: global top-k per video over pooled-token scores, and the baseline scores.

Every method is a *score* per pooled token ``(T, H', W')`` (high = keep); one function,
:func:`select_tokens`, turns any score into the keep masks. So the learned scorer and the
baselines (methods.md §2 item 11) share one code path and one token budget:

* ``learned``: the :class:`~videoprune.stts.scorer.STTSScorer` output.
* ``random``: i.i.d. uniform scores from a seeded generator (:func:`random_scores`).
* ``prev_frame_similarity``: ``1 - cos`` to the same window in the previous frame, on the
  layer-``prune_at`` window features (:func:`prev_frame_scores`).
* ``ref_frame_similarity``: ``1 - cos`` to the current *reference* token at the same location,
  with a threshold deciding when the reference moves (:func:`ref_frame_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..core.evs import top_k_mask, embedding_dissimilarity
from .bias import upsample_to_patches
from .config import STTS_METHODS

__all__ = [
    "STTSSelection",
    "drop_count",
    "method_scores",
    "prev_frame_scores",
    "random_scores",
    "redundant_to_reference",
    "ref_frame_scores",
    "select_tokens",
]


def drop_count(tokens_per_frame: int, num_frames: int, ratio: float) -> int:
    """Pooled tokens STTS drops from one video: ``int(ratio * tokens_per_frame * T)``, capped.

    Frame 0 is never dropped, so the count is capped at ``tokens_per_frame * (T - 1)`` (all of
    frames 1..T-1). The cap binds only when ``ratio > (T - 1) / T`` (e.g. T = 2, ratio 0.6);
    the video then keeps exactly frame 0, i.e. fewer tokens are dropped than requested rather
    than breaking the frame-0 guarantee. Single frames (T = 1) drop nothing.
    """
    for name, v in (("tokens_per_frame", tokens_per_frame), ("num_frames", num_frames)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0.0 <= float(ratio) < 1.0):
        raise ValueError(f"ratio must be a float in [0, 1), got {ratio!r}")
    return min(int(float(ratio) * tokens_per_frame * num_frames), tokens_per_frame * (num_frames - 1))


@dataclass(frozen=True)
class STTSSelection:
    """The hard selection of one video.

    Attributes:
        keep_pooled: ``(T, H', W')`` bool, True for pooled (LLM) tokens that stay.
        keep_patches: ``(T, H'*pool, W'*pool)`` bool, each window's decision on its patches.
        num_dropped: pooled tokens dropped (``drop_count``).
    """

    keep_pooled: torch.Tensor
    keep_patches: torch.Tensor
    num_dropped: int

    @property
    def kept_per_frame(self) -> torch.Tensor:
        """``(T,)`` kept pooled tokens per frame."""
        return self.keep_pooled.flatten(1).sum(1)


def select_tokens(scores: torch.Tensor, ratio: float, pool: int) -> STTSSelection:
    """Drop the :func:`drop_count` lowest-scoring pooled tokens of one video, globally over frames.

    Args:
        scores: ``(T, H', W')``, any real scores (high = keep); NaN is rejected.
        ratio: fraction to drop, in [0, 1).
        pool: merge window side, for the patch-level mask.

    Guarantees: frame 0 is kept whole whatever its scores; exactly ``drop_count`` tokens are
    dropped; among equal scores the lower raster index ``(t, h, w)`` is kept (the EVS tie rule,
    via :func:`videoprune.core.evs.top_k_mask`). No gradient flows through the masks.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 3 or not scores.is_floating_point():
        raise ValueError(f"scores must be a floating (T, H', W') tensor, got {getattr(scores, 'shape', type(scores))}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    t, h, w = scores.shape
    n_drop = drop_count(h * w, t, ratio)
    s = scores.detach().float().reshape(-1).clone()
    s[: h * w] = float("inf")
    keep = top_k_mask(s, t * h * w - n_drop).view(t, h, w)
    return STTSSelection(keep, upsample_to_patches(keep, pool), n_drop)


def random_scores(shape: tuple[int, int, int], seed: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform scores ``shape = (T, H', W')`` from ``torch.Generator().manual_seed(seed)`` (on CPU, so reproducible across devices)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(tuple(shape), generator=g)
    return s if device is None else s.to(device)


def prev_frame_scores(window_features: torch.Tensor) -> torch.Tensor:
    """``1 - cos(f[t], f[t-1])`` per location, ``+inf`` on frame 0: ``(T, H', W', C)`` -> ``(T, H', W')``.

    The EVS dissimilarity (:func:`videoprune.core.evs.embedding_dissimilarity`) applied to the
    layer-``prune_at`` window features; a static window scores 0 and is dropped first.
    """
    t, h, w, c = window_features.shape
    d = embedding_dissimilarity(window_features.detach().float().reshape(-1, c), (t, h, w), 1)
    return d.view(t, h, w)


def _ref_scan(window_features: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    t, h, w, c = window_features.shape
    x = window_features.detach().float()
    ref = x[0].clone()
    cos = torch.ones(t, h, w, device=x.device)
    redundant = torch.zeros(t, h, w, dtype=torch.bool, device=x.device)
    for i in range(1, t):
        ci = F.cosine_similarity(x[i], ref, dim=-1)
        red = ci > threshold
        cos[i], redundant[i] = ci, red
        # a token that is not redundant becomes the new reference at its location
        ref = torch.where(red.unsqueeze(-1), ref, x[i])
    return cos, redundant


def redundant_to_reference(window_features: torch.Tensor, threshold: float = 0.85) -> torch.Tensor:
    """``(T, H', W')`` bool: True where a token is redundant to its location's reference token.

    Reference rule (per location, inferred; methods.md only says "a reference frame with
    threshold 0.85"): the reference at ``(h, w)`` starts as frame 0's token. Frame ``t``'s token
    is redundant when ``cos(token, reference) > threshold``; otherwise it is novel and *becomes*
    the reference at that location. So the reference resets exactly where content changed, and
    slow drift is caught once it accumulates past the threshold (comparing only to the previous
    frame would never catch it). Frame 0 is never redundant.
    """
    return _ref_scan(window_features, threshold)[1]


def ref_frame_scores(window_features: torch.Tensor, threshold: float = 0.85) -> torch.Tensor:
    """``1 - cos(token, reference)`` under the rule of :func:`redundant_to_reference`; ``+inf`` on frame 0.

    Redundant tokens (cosine above ``threshold``) score below ``1 - threshold`` and novel ones
    at or above it, so under the ratio budget the redundant tokens go first, most redundant
    first; if there are fewer redundant tokens than the budget, the least novel others follow.
    """
    cos, _ = _ref_scan(window_features, threshold)
    s = 1.0 - cos
    s[0] = float("inf")
    return s


def method_scores(
    method: str,
    *,
    learned: torch.Tensor | None = None,
    window_features: torch.Tensor | None = None,
    seed: int = 0,
    ref_threshold: float = 0.85,
) -> torch.Tensor:
    """Scores ``(T, H', W')`` of one video for ``method`` (see the module docstring).

    ``learned`` is the scorer output (needed for ``"learned"``); ``window_features`` are the
    mean-pooled layer-``prune_at`` windows ``(T, H', W', C)`` (needed for the similarity
    baselines, and used for the shape of ``"random"`` when ``learned`` is absent).
    """
    if method not in STTS_METHODS:
        raise ValueError(f"method must be one of {STTS_METHODS}, got {method!r}")
    if method == "learned":
        if learned is None:
            raise ValueError("method 'learned' needs the scorer output (learned=...)")
        return learned
    if method == "random":
        ref = learned if learned is not None else window_features
        if ref is None:
            raise ValueError("method 'random' needs learned= or window_features= for the shape")
        shape = tuple(ref.shape[:3])
        return random_scores(shape, seed, ref.device)
    if window_features is None:
        raise ValueError(f"method {method!r} needs window_features=(T, H', W', C)")
    if method == "prev_frame_similarity":
        return prev_frame_scores(window_features)
    return ref_frame_scores(window_features, ref_threshold)
