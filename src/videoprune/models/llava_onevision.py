"""LLaVA-OneVision adapter: per-frame 2x2-pooled grids, one trailing newline token per video, 1D RoPE."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..video.spec import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, FamilySpec
from .base import ModelAdapter, VideoLayout
from .family import TINY_IDS, TINY_PATCH, TINY_VOCAB, Family, overlay, tiny_text

__all__ = ["FAMILY", "LlavaOnevisionAdapter", "tokens_per_side"]


def tokens_per_side(image_size: int, patch_size: int) -> int:
    """LLM tokens per frame side: the ``image_size // patch_size`` patch grid bilinearly pooled 2x2, rounded up.

    The one rule for both the adapter (from the model's config) and the preprocessing spec.
    """
    return math.ceil((int(image_size) // int(patch_size)) / 2)


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
        return tokens_per_side(vc.image_size, vc.patch_size)

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


# --------------------------------------------------------------------------------------------
# the family record
# --------------------------------------------------------------------------------------------
IMAGE_SIZE, PATCH_SIZE = 384, 14  # SigLIP so400m at 384 px

SPEC = FamilySpec(
    name="llava_onevision",
    model_types=("llava_onevision",),
    layout="stack",
    resize="fixed",
    mean=OPENAI_CLIP_MEAN,
    std=OPENAI_CLIP_STD,
    patch_size=PATCH_SIZE,
    merge_size=1,
    temporal_patch_size=1,
    size=(IMAGE_SIZE, IMAGE_SIZE),
    video_token="<video>",
    vision_start=None,
    vision_end=None,
    llava_pooled_side=tokens_per_side(IMAGE_SIZE, PATCH_SIZE),
    default_system=None,
)


def tiny_config(patch_size: int = TINY_PATCH, vocab_size: int = TINY_VOCAB, text: dict | None = None,
                vision: dict | None = None, token_ids: dict | None = None, **top):
    """Tiny LLaVA-OneVision: 2-block SigLIP on ``4 * patch_size`` px frames (4x4 patches, 2x2 tokens), Qwen2 LLM.

    ``token_ids``: ``image_token_id`` / ``video_token_id`` (default :data:`~videoprune.models.family.TINY_IDS`);
    anyres tiles are one frame-sized tile.
    """
    import transformers as tf

    ids = dict(TINY_IDS if token_ids is None else token_ids)
    side = 4 * patch_size
    v = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=2, image_size=side, patch_size=patch_size)
    top = dict(dict(image_token_index=ids["image_token_id"], video_token_index=ids["video_token_id"],
                    vision_feature_layer=-1, vision_feature_select_strategy="full",
                    image_grid_pinpoints=[[side, side]]), **top)
    return tf.LlavaOnevisionConfig(text_config=dict(model_type="qwen2", **tiny_text(vocab_size, **(text or {}))),
                                   vision_config=overlay(v, vision), **top)


FAMILY = Family.of(
    "LlavaOnevision", tiny_config, LlavaOnevisionAdapter,
    spec=SPEC,
    full_size={
        # llava-hf/llava-onevision-qwen2-7b-ov-hf (SigLIP so400m + Qwen2-7B)
        "llava-onevision-7b": dict(
            model_type="llava_onevision", image_token_index=151646, video_token_index=151647,
            vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
            text_config=dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                             num_attention_heads=28, num_key_value_heads=4, vocab_size=152128, rms_norm_eps=1e-6,
                             max_position_embeddings=32768, tie_word_embeddings=False,
                             rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
            vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                               num_hidden_layers=26, num_attention_heads=16, image_size=IMAGE_SIZE,
                               patch_size=PATCH_SIZE),
        ),
    },
)
