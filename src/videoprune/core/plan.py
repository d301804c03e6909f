"""KeepPlan: which tokens of a batch of sequences survive pruning, and how the survivors are packed.

A plan is metadata only: it never holds embeddings. Adapters build one from the model's
video-placeholder mask and a per-token keep mask (from :mod:`videoprune.core.evs`), then use
:meth:`KeepPlan.gather` on embeddings and :func:`videoprune.core.positions.prune_positions` on
position ids, so the LLM sees exactly "kept tokens at their original positions".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .evs import GridLike, normalize_grids

__all__ = ["KeepPlan", "VideoKeepStats", "build_plan", "video_keep_stats"]


@dataclass(frozen=True)
class VideoKeepStats:
    """Token counts for one video: before/after pruning, and kept per (merged) temporal slice."""

    tokens_before: int
    tokens_after: int
    kept_per_frame: tuple[int, ...]

    @property
    def kept_fraction(self) -> float:
        return self.tokens_after / self.tokens_before


@dataclass(frozen=True)
class KeepPlan:
    """The pruned layout of a batch of sequences.

    Attributes:
        keep: ``(B, L)`` bool over the unpruned sequence; True for every real (non-padding)
            token that stays: all text, and the selected video tokens.
        index: ``(B, L')`` long; slot ``j`` of row ``b`` of the pruned batch holds token
            ``index[b, j]`` of the unpruned row. Padding slots point at an arbitrary token of
            the row (0) and are masked out.
        attention_mask: ``(B, L')`` long, 1 on real tokens, 0 on padding.
        padding_side: where padding sits in the pruned batch, ``"left"`` or ``"right"``.
        videos: per-video counts, in the order the videos' features are concatenated.
    """

    keep: torch.Tensor
    index: torch.Tensor
    attention_mask: torch.Tensor
    padding_side: str
    videos: tuple[VideoKeepStats, ...] = ()

    @property
    def pruned_length(self) -> int:
        return int(self.index.shape[1])

    def gather(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Pack ``x`` (batch on dim 0, unpruned sequence on ``dim``) into the pruned layout."""
        if x.shape[0] != self.index.shape[0] or x.shape[dim] != self.keep.shape[1]:
            raise ValueError(
                f"gather expects batch {self.index.shape[0]} on dim 0 and length "
                f"{self.keep.shape[1]} on dim {dim}, got shape {tuple(x.shape)}"
            )
        xt = x.movedim(dim, 1)
        idx = self.index.to(x.device)
        idx = idx.view(*idx.shape, *([1] * (xt.dim() - 2))).expand(*idx.shape, *xt.shape[2:])
        return torch.gather(xt, 1, idx).movedim(1, dim)


def build_plan(
    video_token_mask: torch.Tensor,
    video_keep: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    grid_thw: GridLike | None = None,
    spatial_merge_size: int = 1,
    padding_side: str = "left",
) -> KeepPlan:
    """Build the :class:`KeepPlan` for a batch.

    Args:
        video_token_mask: ``(B, L)`` bool, True at the placeholder positions whose embeddings are
            video features (row-major order over the batch = order of the concatenated features).
        video_keep: ``(N,)`` bool, one entry per True of ``video_token_mask``, in that order.
        attention_mask: ``(B, L)`` with 0 on padding; None means no padding.
        grid_thw, spatial_merge_size: when given, per-video and per-frame counts are recorded in
            ``plan.videos`` (pre-merge grids, as in :func:`videoprune.core.evs.normalize_grids`).
        padding_side: padding side of the pruned batch; rows shorter than the longest are padded.

    Every non-video real token is kept. Real tokens keep their order within a row.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if video_token_mask.dim() != 2 or video_token_mask.dtype != torch.bool:
        raise ValueError(f"video_token_mask must be a (B, L) bool tensor, got {video_token_mask.dtype} {tuple(video_token_mask.shape)}")
    n_video = int(video_token_mask.sum())
    if video_keep.dim() != 1 or video_keep.dtype != torch.bool or video_keep.shape[0] != n_video:
        raise ValueError(f"video_keep must be a bool tensor of shape ({n_video},), got {video_keep.dtype} {tuple(video_keep.shape)}")
    device = video_token_mask.device
    real = torch.ones_like(video_token_mask) if attention_mask is None else attention_mask.to(device).bool()
    if real.shape != video_token_mask.shape:
        raise ValueError(f"attention_mask shape {tuple(real.shape)} != video_token_mask shape {tuple(video_token_mask.shape)}")

    keep = real.clone()
    keep[video_token_mask] = video_keep.to(device) & real[video_token_mask]
    counts = keep.sum(dim=1)
    b, length = keep.shape
    new_len = int(counts.max()) if b else 0

    # Rank of each kept token within its row, shifted right by the row's padding when left-padded.
    rank = torch.cumsum(keep.long(), dim=1) - 1
    if padding_side == "left":
        rank = rank + (new_len - counts).unsqueeze(1)
    index = torch.zeros(b, new_len, dtype=torch.long, device=device)
    rows = torch.arange(b, device=device).unsqueeze(1).expand(b, length)
    src = torch.arange(length, device=device).unsqueeze(0).expand(b, length)
    index[rows[keep], rank[keep]] = src[keep]
    slots = torch.arange(new_len, device=device).unsqueeze(0)
    if padding_side == "left":
        new_mask = slots >= (new_len - counts).unsqueeze(1)
    else:
        new_mask = slots < counts.unsqueeze(1)

    videos: tuple[VideoKeepStats, ...] = ()
    if grid_thw is not None:
        expected = sum(t * h * w for t, h, w in normalize_grids(grid_thw, spatial_merge_size))
        if expected != n_video:
            raise ValueError(f"grid_thw implies {expected} video tokens but video_token_mask has {n_video}")
        videos = video_keep_stats(video_keep.to(device), grid_thw, spatial_merge_size)
    return KeepPlan(keep=keep, index=index, attention_mask=new_mask.long(), padding_side=padding_side, videos=videos)


def video_keep_stats(keep: torch.Tensor, grid_thw: GridLike, spatial_merge_size: int = 1) -> tuple[VideoKeepStats, ...]:
    """Per-video token counts of a keep mask: before, after, and kept per temporal slice.

    ``keep`` is ``(N,)`` bool over the videos' tokens, concatenated in raster order; ``grid_thw``
    their grids as :func:`videoprune.core.evs.normalize_grids` takes them (one temporal slice of a
    video is ``H' x W'`` tokens).
    """
    stats, start = [], 0
    for t, h, w in normalize_grids(grid_thw, spatial_merge_size):
        per_frame = keep[start : start + t * h * w].view(t, h * w).sum(dim=1).tolist()
        stats.append(VideoKeepStats(t * h * w, int(sum(per_frame)), tuple(int(c) for c in per_frame)))
        start += t * h * w
    return tuple(stats)
