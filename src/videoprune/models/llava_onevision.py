"""LLaVA-OneVision adapter: per-frame 2x2-pooled grids, one trailing newline token per video, 1D RoPE."""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import ModelAdapter, VideoLayout

__all__ = ["LlavaOnevisionAdapter"]


class LlavaOnevisionAdapter(ModelAdapter):
    """LLaVA-OneVision.

    ``get_video_features`` returns, per video, ``frames * s * s`` tokens (each frame's patch grid
    bilinearly pooled to ``s = ceil(side / 2)``, ``side = image_size // patch_size``) followed by
    one ``image_newline`` token. The grid is ``(frames, s, s)`` with no spatial merge; the newline
    is never pruned. Positions are 1D: the ids generate passes, else ``arange(L)`` (what the
    language model uses itself).
    """

    model_types = ("llava_onevision",)
    position_axes = 1
    supports_pixel_criterion = False

    def tokens_per_side(self) -> int:
        vc = self.config.vision_config
        return math.ceil((vc.image_size // vc.patch_size) / 2)

    def video_layout(self, call: dict[str, Any]) -> VideoLayout | None:
        pixels = call.get("pixel_values_videos")
        if pixels is None:
            if (call.get("mm_encoder_outputs") or {}).get("video") is not None:
                raise ValueError("videoprune needs pixel_values_videos for LLaVA-OneVision (to know the frame "
                                 "count); precomputed video encoder outputs are not supported")
            return None
        input_ids = call.get("input_ids")
        if input_ids is None:
            raise ValueError("videoprune needs input_ids (not inputs_embeds) on calls with video, "
                             "to find the video placeholder tokens")
        if pixels.dim() != 5:
            raise ValueError(f"pixel_values_videos must be (videos, frames, C, H, W), got {tuple(pixels.shape)}")
        n_videos, frames = int(pixels.shape[0]), int(pixels.shape[1])
        s = self.tokens_per_side()
        per_video = frames * s * s
        mask = input_ids == self.config.video_token_id
        if int(mask.sum()) != n_videos * (per_video + 1):
            raise ValueError(f"{int(mask.sum())} video placeholder tokens but {n_videos} videos of {frames} frames "
                             f"imply {n_videos * (per_video + 1)} ({s}x{s} per frame + 1 newline)")
        on_grid = torch.ones(per_video + 1, dtype=torch.bool, device=mask.device)
        on_grid[-1] = False  # the newline closes each video
        return VideoLayout(placeholder_mask=mask, grid_thw=[(frames, s, s)] * n_videos, spatial_merge_size=1,
                           grid_token_mask=on_grid.repeat(n_videos))
