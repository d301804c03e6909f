"""Soft key bias of STTS: the scores enter block ``prune_at + 1`` as an additive attention bias.

This is the path by which the task loss reaches the scorer (methods.md §2 item 7): the kept
selection is hard and has no gradient, but the bias does.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BIAS_FLOOR", "key_bias", "key_bias_attn_mask", "pooled_key_bias", "upsample_to_patches"]

# The rescaled score lives in [e^-2, 1], so the bias log(score) lives in [BIAS_FLOOR, 0].
BIAS_FLOOR = -2.0
# A frame whose scores span less than this is treated as flat: bias 0 everywhere (no
# preference can be read from it, and dividing by ~0 would blow the gradient up).
FLAT_RANGE = 1e-6


def pooled_key_bias(scores: torch.Tensor, is_video: bool = True) -> torch.Tensor:
    """Bias per pooled token: ``log(e^-2 + (1 - e^-2) * r)``, ``r`` the per-frame min-max rescale.

    Args:
        scores: ``(..., T, H', W')`` scorer output.
        is_video: False for images, which get an all-zero bias (they are never pruned).

    Returns:
        ``(..., T, H', W')`` in [-2, 0], differentiable w.r.t. ``scores``. Frame 0 gets 0 (it is
        always kept, so it is not biased either). The rescale is **per frame**: each frame's
        lowest score maps to -2 and its highest to 0. methods.md §2 item 7 notes that the
        public code normalises per patch row and that per frame was probably meant; a per-frame
        range gives every frame the same bias spread regardless of how its rows differ.
        Frames with a flat score range (< ``FLAT_RANGE``) get 0.
    """
    if scores.dim() < 3:
        raise ValueError(f"scores must be (..., T, H', W'), got shape {tuple(scores.shape)}")
    if not is_video:
        return torch.zeros_like(scores)
    s = scores.float()
    lo = s.amin(dim=(-2, -1), keepdim=True)
    hi = s.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    flat = span < FLAT_RANGE
    r = (s - lo) / torch.where(flat, torch.ones_like(span), span)
    # log1p(a (r - 1)) == log(e^-2 + a r) with a = 1 - e^-2, and is exactly 0 at r = 1.
    bias = torch.log1p((1.0 - math.exp(BIAS_FLOOR)) * (r - 1.0))
    bias = torch.where(flat, torch.zeros_like(bias), bias)
    frame0 = torch.zeros_like(bias)
    frame0[..., 1:, :, :] = 1.0
    return bias * frame0


def upsample_to_patches(pooled: torch.Tensor, pool: int) -> torch.Tensor:
    """Give every patch its window's value: ``(..., T, H', W')`` -> ``(..., T, H'*pool, W'*pool)``."""
    return pooled.repeat_interleave(pool, dim=-2).repeat_interleave(pool, dim=-1)


def key_bias(scores: torch.Tensor, pool: int, is_video: bool = True) -> torch.Tensor:
    """Per-patch key bias ``(..., T, Hp, Wp)`` in [-2, 0] from pooled scores ``(..., T, H', W')``."""
    return upsample_to_patches(pooled_key_bias(scores, is_video), pool)


def key_bias_attn_mask(patch_bias: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Additive SDPA mask for per-frame attention: ``(T, Hp, Wp)`` -> ``(T, 1, 1, Hp*Wp)``.

    Broadcasts over heads and queries: every query of frame ``t`` sees key ``j`` shifted by
    ``bias[t, j]``. Frames are the attention batch, as in per-frame ViTs (Molmo2). Encoders
    with varlen attention over concatenated frames need the bias laid out along their keys.
    """
    t = patch_bias.shape[0]
    m = patch_bias.reshape(t, 1, 1, -1)
    return m if dtype is None else m.to(dtype)
