"""Qwen3-VL adapter: per-frame video blocks separated by timestamp text, plus deepstack features."""

from __future__ import annotations

from typing import Any

from ..core.plan import KeepPlan
from .qwen2_vl import Qwen2VLAdapter

__all__ = ["Qwen3VLAdapter"]


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL.

    The processor writes ``<t s> <vision_start> frame tokens <vision_end>`` per temporal slice.
    Kept tokens are gathered from the full sequence, so each frame's survivors stay between its
    own timestamp and the next one, whatever the per-frame counts (the vLLM bug of methods.md
    §1.5 cannot happen). Deepstack features, added to visual positions in early LLM layers,
    are pruned with the same plan.
    """

    model_types = ("qwen3_vl",)
    # its encoder (learned interpolated position embeddings, deepstack taps) is not driven by qwen_vision
    supports_pre_encoder = False

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
