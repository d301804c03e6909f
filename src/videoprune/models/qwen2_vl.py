"""Qwen2-VL adapter: video tokens are one contiguous block per video on the merged (T', H', W') grid."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..config import EVSConfig
from ..core.evs import normalize_grids, pixel_dissimilarity, select_by_rate, select_by_threshold
from ..video.spec import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, FamilySpec
from .base import ModelAdapter, PreEncodedVideos, VideoLayout
from .family import TINY_HIDDEN, TINY_IDS, TINY_MROPE, TINY_PATCH, TINY_VOCAB, Family, overlay, tiny_text

__all__ = ["FAMILY", "QWEN_IDS", "Qwen2VLAdapter", "qwen_spec", "qwen_tiny", "qwen_tiny_config"]


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL; also the base of the Qwen2.5-VL and Qwen3-VL adapters (same grid and pixels).

    Positions are the model's own 3-axis M-RoPE ids (``get_rope_index``), intercepted at the
    language model's input; features are read back from the model's own ``inputs_embeds``.
    """

    model_types = ("qwen2_vl",)
    position_axes = 3
    supports_pixel_criterion = True
    supports_pre_encoder = True

    @property
    def spatial_merge_size(self) -> int:
        return int(self.config.vision_config.spatial_merge_size)

    def video_layout(self, call: dict[str, Any]) -> VideoLayout | None:
        grid = call.get("video_grid_thw")
        if call.get("pixel_values_videos") is None and (call.get("mm_encoder_outputs") or {}).get("video") is None:
            return None
        input_ids = call.get("input_ids")
        if input_ids is None:
            raise ValueError("videoprune needs input_ids (not inputs_embeds) on calls with video, "
                             "to find the video placeholder tokens")
        if grid is None:
            raise ValueError("video inputs without video_grid_thw")
        merge = self.spatial_merge_size
        mask = input_ids == self.config.video_token_id
        n = sum(t * h * w for t, h, w in normalize_grids(grid, merge))
        if int(mask.sum()) != n:
            raise ValueError(f"{int(mask.sum())} video placeholder tokens but video_grid_thw implies {n}")
        return VideoLayout(placeholder_mask=mask, grid_thw=[tuple(int(v) for v in r) for r in grid.tolist()],
                           spatial_merge_size=merge)

    def pixel_dissimilarity(self, call: dict[str, Any], layout: VideoLayout) -> torch.Tensor:
        pixels = call.get("pixel_values_videos")
        if pixels is None:
            raise ValueError("criterion='pixel' needs pixel_values_videos (precomputed encoder outputs carry none)")
        return pixel_dissimilarity(pixels, layout.grid_thw, layout.spatial_merge_size)

    def encode_videos_pre_encoder(self, cfg: EVSConfig, pixel_values_videos: torch.Tensor,
                                  video_grid_thw: torch.Tensor) -> PreEncodedVideos:
        """Select with the pixel criterion, then encode only the kept tokens (all videos in one pass).

        ``keep`` is exactly what the post-encoder pixel criterion selects (same function on the
        same pixels); ``features`` are the kept tokens in raster order, each computed from the
        kept tokens of its temporal slice only
        (:func:`videoprune.models.qwen_vision.encode_kept_units`). Selection runs on the pixels'
        device; the pruned tokens' features are never computed.
        """
        from .qwen_vision import encode_kept_units

        with self.phase("select"):
            keep = self.select_pre_encoder(cfg, pixel_values_videos, video_grid_thw)
        feats = encode_kept_units(self.inner.visual, pixel_values_videos, video_grid_thw, keep)
        return PreEncodedVideos(keep=keep, features=feats)

    def pre_encoder_video_output(self, encoded: PreEncodedVideos, video_grid_thw: torch.Tensor):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        sizes = self._video_sizes(video_grid_thw)
        return BaseModelOutputWithPooling(pooler_output=tuple(torch.split(encoded.scatter(encoded.features), sizes)))

    def _video_sizes(self, video_grid_thw: torch.Tensor) -> list[int]:
        """LLM tokens per video (how ``get_video_features`` splits its output)."""
        return (video_grid_thw.prod(-1) // self.spatial_merge_size**2).tolist()

    def select_pre_encoder(self, cfg: EVSConfig, pixel_values_videos: torch.Tensor,
                           video_grid_thw: torch.Tensor) -> torch.Tensor:
        """``(N_tokens,)`` bool keep mask from the pixel criterion (rate or threshold mode), on the pixels' device."""
        merge = self.spatial_merge_size
        d = pixel_dissimilarity(pixel_values_videos, video_grid_thw, merge)
        if cfg.rate is not None:
            return select_by_rate(d, video_grid_thw, merge, cfg.rate)
        return select_by_threshold(d, video_grid_thw, merge, cfg.threshold, cfg.min_keep_fraction,
                                   cfg.max_keep_fraction)


# --------------------------------------------------------------------------------------------
# the family record
# --------------------------------------------------------------------------------------------
#: Special token ids of the published Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoints.
QWEN_IDS = dict(vision_start_token_id=151652, vision_end_token_id=151653, image_token_id=151655,
                video_token_id=151656)


def qwen_spec(name: str, patch_size: int, **fields: Any) -> FamilySpec:
    """The :class:`FamilySpec` of a Qwen family: flat patch rows, 2x2 merge, temporal patch 2.

    The pixel budget is 128 to 768 merge units of ``(2 * patch_size)**2`` pixels (the Qwen video
    processors' ``size``); ``fields``: the rest (``resize``, ``mean``, ``std``, prompt details).
    """
    unit = (2 * patch_size) ** 2
    return FamilySpec(name=name, model_types=(name,), layout="patches", patch_size=patch_size, merge_size=2,
                      temporal_patch_size=2, min_pixels=128 * unit, max_pixels=768 * unit, **fields)


SPEC = qwen_spec("qwen2_vl", 14, resize="qwen2", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)


def qwen_tiny_config(config_class: str, vision: dict, text: dict | None = None, vocab_size: int = TINY_VOCAB,
                     token_ids: dict | None = None, rope: dict | None = None, **top):
    """A tiny Qwen-family config: :func:`~videoprune.models.family.tiny_text` LLM with M-RoPE, ``vision`` tower.

    ``text`` overrides LLM fields, ``token_ids`` replaces :data:`~videoprune.models.family.TINY_IDS`,
    ``rope`` replaces the M-RoPE parameters, ``top`` sets other top-level config fields.
    """
    import transformers as tf

    text_config = tiny_text(vocab_size, rope_parameters=dict(rope or TINY_MROPE), **(text or {}))
    return getattr(tf, config_class)(text_config=text_config, vision_config=vision,
                                     **dict(TINY_IDS if token_ids is None else token_ids), **top)


def qwen_tiny(config_class: str, tower: Callable[[int], dict], text_defaults: Mapping[str, Any] | None = None,
              rope: Mapping[str, Any] = TINY_MROPE) -> Callable[..., Any]:
    """A Qwen family's ``tiny_config(patch_size=TINY_PATCH, vision=None, text=None, **kw)``.

    It builds :func:`qwen_tiny_config` with the tower ``tower(patch_size)`` (``vision``
    overrides), the LLM fields ``text_defaults`` (``text`` on top) and ``rope`` unless the call
    names another; ``kw`` as :func:`qwen_tiny_config` takes them.
    """
    def tiny_config(patch_size: int = TINY_PATCH, vision: dict | None = None, text: dict | None = None, **kw):
        kw.setdefault("rope", rope)
        return qwen_tiny_config(config_class, overlay(tower(patch_size), vision),
                                text=overlay(text_defaults or {}, text), **kw)

    return tiny_config


def tiny_tower(patch_size: int) -> dict:
    """The tiny Qwen2-VL tower: one 32-wide vision block at ``patch_size`` (2x2 merge, temporal patch 2)."""
    return dict(depth=1, embed_dim=32, hidden_size=TINY_HIDDEN, mlp_ratio=2, num_heads=2, patch_size=patch_size,
                spatial_merge_size=2, temporal_patch_size=2)


#: Tiny Qwen2-VL: :func:`tiny_tower` (``vision`` overrides), the tiny M-RoPE LLM.
tiny_config = qwen_tiny("Qwen2VLConfig", tiny_tower)


FAMILY = Family.of(
    "Qwen2VL", tiny_config, Qwen2VLAdapter,
    spec=SPEC,
    vision_tower="Qwen2VisionTransformerPretrainedModel",
    train_tiny={},
    full_size={
        # Qwen/Qwen2-VL-7B-Instruct
        "qwen2-vl-7b": dict(
            model_type="qwen2_vl", **QWEN_IDS,
            text_config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                             num_key_value_heads=4, vocab_size=152064, rms_norm_eps=1e-6,
                             max_position_embeddings=32768, tie_word_embeddings=False,
                             rope_parameters=dict(rope_type="default", rope_theta=1000000.0,
                                                  mrope_section=[16, 24, 24])),
            vision_config=dict(depth=32, embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        ),
    },
)
