"""STTSScorer: the small learned module that gives every pooled video token a novelty score in (0, 1).

Layout used throughout :mod:`videoprune.stts`: one video's ViT hidden states as a patch grid
``(..., T, Hp, Wp, C)`` (leading dims, if any, are independent videos of the same shape), and
a merge window side ``pool``; ``Hp`` and ``Wp`` are multiples of ``pool``. Each ``pool x pool``
window is the unit that becomes one LLM token, so the pooled grid is
``(..., T, H', W') = (..., T, Hp / pool, Wp / pool)``, in raster order ``(t, h, w)``.
Encoders that order patches window by window (Qwen2.5-VL: ``(t, h', w', pool, pool)``) must be
reshaped into this grid by the caller (see :func:`windows_to_grid`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["STTSScorer", "cosine_to_previous", "grid_to_windows", "window_mean", "window_view", "windows_to_grid"]


def _check_grid(x: torch.Tensor, pool: int, name: str = "hidden") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 4:
        raise ValueError(f"{name} must be a (..., T, Hp, Wp, C) tensor, got {getattr(x, 'shape', type(x))}")
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool must be a positive int, got {pool!r}")
    hp, wp = x.shape[-3], x.shape[-2]
    if hp % pool or wp % pool:
        raise ValueError(f"{name}: patch grid {hp}x{wp} is not a multiple of pool={pool}")


def window_view(x: torch.Tensor, pool: int) -> torch.Tensor:
    """``(..., T, Hp, Wp, C)`` -> ``(..., T, H', W', pool*pool, C)``: the patches of each window.

    Patches inside a window are in raster order (row ``i``, column ``j`` -> ``i * pool + j``).
    """
    _check_grid(x, pool)
    *lead, t, hp, wp, c = x.shape
    h, w = hp // pool, wp // pool
    x = x.reshape(*lead, t, h, pool, w, pool, c).movedim(-4, -3)  # (..., T, h, w, pool, pool, C)
    return x.reshape(*lead, t, h, w, pool * pool, c)


def window_mean(x: torch.Tensor, pool: int) -> torch.Tensor:
    """Mean of each merge window: ``(..., T, Hp, Wp, C)`` -> ``(..., T, H', W', C)``."""
    return window_view(x, pool).mean(dim=-2)


def windows_to_grid(x: torch.Tensor, t: int, hp: int, wp: int, pool: int) -> torch.Tensor:
    """Window-major flat patches ``(T*H'*W'*pool*pool, C)`` (Qwen2.5-VL order) -> grid ``(T, Hp, Wp, C)``."""
    h, w = hp // pool, wp // pool
    if hp % pool or wp % pool or x.shape[0] != t * hp * wp:
        raise ValueError(f"cannot view {tuple(x.shape)} as T={t}, {hp}x{wp} patches in {pool}x{pool} windows")
    x = x.reshape(t, h, w, pool, pool, -1).movedim(3, 2)  # (T, h, pool, w, pool, C)
    return x.reshape(t, hp, wp, -1)


def grid_to_windows(x: torch.Tensor, pool: int) -> torch.Tensor:
    """Inverse of :func:`windows_to_grid`: ``(T, Hp, Wp, C)`` -> ``(T*H'*W'*pool*pool, C)``."""
    return window_view(x, pool).reshape(-1, x.shape[-1])


class STTSScorer(nn.Module):
    """Scores each pooled video token from the ViT hidden states after block ``prune_at``.

    Per merge window (methods.md §2 items 2-4):

    1. LayerNorm the patches (inferred: mid-ViT activations are unnormalised, and the MLP should
       not see their raw scale), then attention-pool them with a single head whose query is a
       projection of the window mean and whose keys are projections of the patches
       (``width -> attn_dim``). The values are the normalised patches themselves, so the pooled
       vector is a convex combination of the window's patches (width ``width``).
    2. Concatenate with the pooled vector at the same location in the previous frame (zeros for
       frame 0) -> ``2 * width``.
    3. MLP ``2*width -> mlp_hidden -> mlp_hidden -> 1`` with SiLU, then a sigmoid.

    Args:
        width: ViT hidden size ``C``.
        pool: merge window side (3 for Molmo2, 2 for Qwen2.5-VL).
        mlp_hidden, attn_dim: see :class:`~videoprune.stts.config.STTSConfig`.

    ``forward(hidden)`` takes ``(..., T, Hp, Wp, C)`` and returns scores ``(..., T, H', W')``
    in (0, 1) (high = new content), in float32 whatever the input dtype is.
    """

    def __init__(self, width: int, pool: int, mlp_hidden: int = 256, attn_dim: int = 64) -> None:
        super().__init__()
        for name, v in (("width", width), ("pool", pool), ("mlp_hidden", mlp_hidden), ("attn_dim", attn_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.width, self.pool = width, pool
        self.norm = nn.LayerNorm(width)
        self.q_proj = nn.Linear(width, attn_dim)
        self.k_proj = nn.Linear(width, attn_dim)
        self.mlp = nn.Sequential(
            nn.Linear(2 * width, mlp_hidden),
            nn.SiLU(),
            nn.Linear(mlp_hidden, mlp_hidden),
            nn.SiLU(),
            nn.Linear(mlp_hidden, 1),
        )
        self._scale = 1.0 / math.sqrt(attn_dim)

    def pool_windows(self, hidden: torch.Tensor) -> torch.Tensor:
        """Attention-pooled vector per window: ``(..., T, Hp, Wp, C)`` -> ``(..., T, H', W', C)``."""
        if hidden.shape[-1] != self.width:
            raise ValueError(f"hidden has width {hidden.shape[-1]}, scorer expects {self.width}")
        x = self.norm(window_view(hidden, self.pool).float())  # (..., T, H', W', P, C)
        q = self.q_proj(x.mean(dim=-2, keepdim=True))  # (..., 1, A)
        k = self.k_proj(x)  # (..., P, A)
        attn = torch.softmax((q * k).sum(-1) * self._scale, dim=-1)  # (..., P)
        return (attn.unsqueeze(-1) * x).sum(dim=-2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        pooled = self.pool_windows(hidden)  # (..., T, H', W', C)
        prev = torch.cat([torch.zeros_like(pooled[..., :1, :, :, :]), pooled[..., :-1, :, :, :]], dim=-4)
        logits = self.mlp(torch.cat([pooled, prev], dim=-1)).squeeze(-1)
        return torch.sigmoid(logits)


def cosine_to_previous(features: torch.Tensor) -> torch.Tensor:
    """``cos(f[t], f[t-1])`` at each location for ``t >= 1``: ``(..., T, H', W', C)`` -> ``(..., T-1, H', W')``."""
    return F.cosine_similarity(features[..., 1:, :, :, :], features[..., :-1, :, :, :], dim=-1)
