"""The :class:`FamilySpec` record and the normalisation constants the family records build it from.

A leaf module: it imports nothing from :mod:`videoprune.models`, so the family records
(``models/<family>.py``) can import it while :mod:`~videoprune.video.preprocess` looks the records
up in the registry, without an import loop between models/ and video/.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..validate import check_pixel_budget

__all__ = ["FamilySpec", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "IMAGENET_STANDARD_MEAN", "IMAGENET_STANDARD_STD"]

#: CLIP's per-channel RGB mean / std (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The "ImageNet standard" mean / std of 0.5 (Qwen3-VL, Molmo2).
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class FamilySpec:
    """Everything preprocessing and prompting need to know about one model family.

    ``layout``: "patches" (Qwen: flat ``(N, C*tp*p*p)`` rows plus ``video_grid_thw``) or
    "stack" (LLaVA-OneVision: ``(1, T, C, H, W)``). ``resize``: "qwen2" (per-frame pixel budget),
    "qwen3" (budget over all frames) or "fixed" (to ``size``). Pixel budgets are in pixels.
    """

    name: str
    model_types: tuple[str, ...]
    layout: str
    resize: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int
    merge_size: int = 2
    temporal_patch_size: int = 1
    min_pixels: int = 0
    max_pixels: int = 0
    size: tuple[int, int] | None = None  # (height, width) for resize == "fixed"
    video_token: str = "<|video_pad|>"
    vision_start: str | None = "<|vision_start|>"
    vision_end: str | None = "<|vision_end|>"
    second_per_grid_ts: bool = False  # Qwen2.5-VL's temporal M-RoPE input
    frame_timestamps_in_prompt: bool = False  # Qwen3-VL's "<t seconds>" text before each frame
    default_system: str | None = "You are a helpful assistant."
    # LLaVA-OV: tokens per frame side after 2x2 bilinear pooling (models.llava_onevision.tokens_per_side)
    llava_pooled_side: int = field(default=0)

    def with_pixels(self, min_pixels: int | None = None, max_pixels: int | None = None) -> FamilySpec:
        """A copy with other pixel budgets (None keeps the current one); ValueError unless ``0 <= min <= max``."""
        if self.layout == "patches":  # the only layout with a pixel budget
            check_pixel_budget(self.min_pixels if min_pixels is None else min_pixels,
                               self.max_pixels if max_pixels is None else max_pixels)
        return replace(
            self,
            min_pixels=self.min_pixels if min_pixels is None else int(min_pixels),
            max_pixels=self.max_pixels if max_pixels is None else int(max_pixels),
        )
