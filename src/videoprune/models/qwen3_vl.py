"""Qwen3-VL adapter: per-frame video blocks separated by timestamp text, plus deepstack features."""

from __future__ import annotations

from typing import Any

import torch

from ..config import EVSConfig
from ..core.plan import KeepPlan
from .base import PreEncodedVideos
from .qwen2_vl import Qwen2VLAdapter

__all__ = ["Qwen3VLAdapter"]


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL.

    The processor writes ``<t s> <vision_start> frame tokens <vision_end>`` per temporal slice.
    Kept tokens are gathered from the full sequence, so each frame's survivors stay between its
    own timestamp and the next one, whatever the per-frame counts (the vLLM bug of methods.md
    §1.5 cannot happen). Deepstack features, added to visual positions in early LLM layers,
    are pruned with the same plan.

    Pre-encoder EVS: the tower runs on the kept merge units only (attention within each temporal
    slice's kept units; learned position embeddings and rotary ids of the kept patches gathered
    from the full-grid tables), and produces the main and every deepstack feature for the kept
    tokens only. They are scattered back to full length at the pruned tokens' (zero) rows, so
    the model places them and builds ``visual_pos_masks`` as usual; the LLM-side plan then
    gathers kept rows of all of them (:meth:`prune_lm_kwargs`).
    """

    model_types = ("qwen3_vl",)

    def encode_videos_pre_encoder(self, cfg: EVSConfig, pixel_values_videos: torch.Tensor,
                                  video_grid_thw: torch.Tensor) -> PreEncodedVideos:
        """Select with the pixel criterion, then encode only the kept tokens, deepstack included.

        Same selection as Qwen2-VL (and as the post-encoder pixel criterion); ``features`` and
        ``deepstack`` come from :func:`videoprune.models.qwen_vision.encode_kept_units_deepstack`.
        """
        from .qwen_vision import encode_kept_units_deepstack

        with self.phase("select"):
            keep = self.select_pre_encoder(cfg, pixel_values_videos, video_grid_thw)
        feats, deep = encode_kept_units_deepstack(self.inner.visual, pixel_values_videos, video_grid_thw, keep)
        return PreEncodedVideos(keep=keep, features=feats, deepstack=tuple(deep))

    def pre_encoder_video_output(self, encoded: PreEncodedVideos, video_grid_thw: torch.Tensor):
        """``BaseModelOutputWithDeepstackFeatures`` as ``Qwen3VLModel.get_video_features`` returns it
        (5.23.0 / 5.25.0): per-video splits of ``pooler_output`` and of every deepstack feature."""
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        sizes = self._video_sizes(video_grid_thw)
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=tuple(torch.split(encoded.scatter(encoded.features), sizes)),
            deepstack_features=[tuple(torch.split(encoded.scatter(d), sizes)) for d in encoded.deepstack])

    def prune_lm_kwargs(self, kwargs: dict[str, Any], plan: KeepPlan) -> dict[str, Any]:
        vis = kwargs.get("visual_pos_masks")
        deep = kwargs.get("deepstack_visual_embeds")
        if vis is None:
            return kwargs
        vis = vis.to(plan.keep.device)
        keep_visual = plan.keep[vis]  # (N_visual,) in the order deepstack rows are stored
        new_vis = plan.gather(vis) & plan.attention_mask.bool()
        if int(new_vis.sum()) != int(keep_visual.sum()):
            raise RuntimeError("deepstack bookkeeping mismatch: kept visual tokens do not line up")
        kwargs = dict(kwargs)
        kwargs["visual_pos_masks"] = new_vis
        if deep is not None:
            kwargs["deepstack_visual_embeds"] = [e[keep_visual.to(e.device)] for e in deep]
        return kwargs
