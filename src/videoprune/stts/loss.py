"""Temporal auxiliary loss of STTS: a frame's scores should track how much its windows changed."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .scorer import cosine_to_previous

__all__ = ["temporal_aux_loss", "temporal_target"]


def temporal_target(window_features: torch.Tensor) -> torch.Tensor:
    """Detached target ``1 - cos(f[t-1], f[t])`` per location, frames ``t >= 1``.

    Args:
        window_features: ``(..., T, H', W', C)``, the **mean-pooled** merge windows of the ViT
            hidden states after block ``prune_at`` (:func:`videoprune.stts.scorer.window_mean`).
            Mean pooling, not the scorer's learned attention pool, is used so that the target
            is a fixed function of the encoder and cannot drift with the scorer's weights.

    Returns:
        ``(..., T-1, H', W')`` float32 in [0, 2], without gradient.
    """
    with torch.no_grad():
        return 1.0 - cosine_to_previous(window_features.detach().float())


def temporal_aux_loss(scores: torch.Tensor, window_features: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    """``weight * MSE(score[t], 1 - cos(f[t-1], f[t]))`` over all tokens of frames ``t >= 1``.

    Args:
        scores: ``(..., T, H', W')`` scorer output in (0, 1).
        window_features: ``(..., T, H', W', C)``, see :func:`temporal_target`.
        weight: the loss weight (``STTSConfig.aux_loss_weight``, 0.5 in the paper).

    Returns:
        A scalar. For single-frame inputs (images, ``T == 1``) there is nothing to predict: the
        result is an exact 0 that still depends on ``scores`` (so ``backward`` works and gives
        zero gradients). Video frames only: callers must not pass images as ``T > 1``.
    """
    if scores.shape != window_features.shape[:-1]:
        raise ValueError(
            f"scores {tuple(scores.shape)} must match window_features {tuple(window_features.shape)} without its last dim"
        )
    if scores.shape[-3] < 2:
        return scores.sum() * 0.0
    target = temporal_target(window_features)
    return weight * F.mse_loss(scores[..., 1:, :, :].float(), target)
