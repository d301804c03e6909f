"""Molmo2's ``video_token_pooling`` layout, which changed in transformers 5.24: the one place that knows.

Each LLM video token of Molmo2 attention-pools a ``pool x pool`` window of ViT patches;
``video_token_pooling`` (``(tokens, pool * pool)`` long) lists the patch indices of each window.
What those indices point into depends on the transformers release:

* **global** (5.23 and earlier): indices into the patches of *all* videos of the call,
  concatenated; the processor adds each video's patch offset.
* **per video** (5.24 and later): each video's indices start at 0 and index only its own
  patches; ``Molmo2Model.get_image_features`` adds the offsets itself (it takes
  ``image_num_crops`` for that), so inputs in the old layout overflow (``IndexError: index
  432 is out of bounds``).

A single video is the same in both. The layout is detected from the model code's behaviour
(whether ``get_image_features`` takes ``image_num_crops``), not from a version string, so a
backport or a patched install is read correctly. Everything that builds or reads Molmo2
pooling indices (the STTS encoder, the speed benchmark's input builder, the tests) goes
through :func:`video_pooling` and :func:`to_global`.
"""

from __future__ import annotations

import functools
import inspect

import torch

__all__ = ["pooling_is_per_video", "window_indices", "video_pooling", "to_global"]


@functools.cache
def pooling_is_per_video() -> bool:
    """True when the installed transformers' Molmo2 expects per-video pooling indices (5.24+)."""
    from transformers.models.molmo2 import modeling_molmo2  # noqa: PLC0415

    return "image_num_crops" in inspect.signature(modeling_molmo2.Molmo2Model.get_image_features).parameters


def window_indices(hp: int, wp: int, pool: int) -> torch.Tensor:
    """``(hp/pool * wp/pool, pool*pool)`` long: the patch ids of each ``pool x pool`` window of one frame, raster order."""
    if hp % pool or wp % pool:
        raise ValueError(f"pool={pool} does not tile the {hp}x{wp} patch grid of a Molmo2 frame")
    grid = torch.arange(hp * wp).view(hp, wp)
    return grid.view(hp // pool, pool, wp // pool, pool).permute(0, 2, 1, 3).reshape(-1, pool * pool)


def video_pooling(frames_per_video: list[int], hp: int, wp: int, pool: int,
                  per_video: bool | None = None) -> torch.Tensor:
    """``video_token_pooling`` for regular ``pool x pool`` windows, in the installed model's layout.

    Args:
        frames_per_video: frames of each video of the call, in order.
        hp, wp: patches per frame side.
        per_video: force a layout (tests); None = the installed transformers' (:func:`pooling_is_per_video`).
    """
    if per_video is None:
        per_video = pooling_is_per_video()
    win, p = window_indices(hp, wp, pool), hp * wp
    out, offset = [], 0
    for t in frames_per_video:
        out += [win + offset + f * p for f in range(int(t))]
        if not per_video:
            offset += int(t) * p
    return torch.cat(out) if out else torch.zeros(0, pool * pool, dtype=torch.long)


def to_global(pooling: torch.Tensor, tokens_per_video: list[int], patches_per_video: list[int],
              per_video: bool | None = None) -> torch.Tensor:
    """Pooling indices in the installed layout -> indices into all videos' patches concatenated.

    ``tokens_per_video[i]`` rows of ``pooling`` belong to video ``i``, whose patches number
    ``patches_per_video[i]``. Negative (padding) entries stay negative. A no-op in the global layout.
    """
    if per_video is None:
        per_video = pooling_is_per_video()
    if not per_video or len(tokens_per_video) <= 1:
        return pooling
    starts = torch.tensor([0] + list(patches_per_video[:-1]), device=pooling.device).cumsum(0)
    offsets = starts.repeat_interleave(torch.tensor(tokens_per_video, device=pooling.device))
    if offsets.numel() != pooling.shape[0]:
        raise ValueError(f"video_token_pooling has {pooling.shape[0]} rows, the videos have {offsets.numel()} tokens")
    return torch.where(pooling >= 0, pooling + offsets[:, None].to(pooling.dtype), pooling)
