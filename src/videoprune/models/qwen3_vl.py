"""Qwen3-VL adapter: per-frame video blocks separated by timestamp text, plus deepstack features."""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch

from ..config import EVSConfig
from ..core.plan import KeepPlan
from ..video.spec import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD
from .base import PreEncodedVideos
from .family import TINY_HIDDEN, TINY_MROPE, TINY_PATCH, Family
from .qwen2_vl import QWEN_IDS, Qwen2VLAdapter, qwen_spec, qwen_tiny

__all__ = ["FAMILY", "Qwen3VLAdapter", "qwen3_tiny_vision"]


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
    #: where transformers defines this family's ``BaseModelOutputWithDeepstackFeatures``
    deepstack_output_module: ClassVar[str] = "transformers.models.qwen3_vl.modeling_qwen3_vl"

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
        output_cls = importlib.import_module(self.deepstack_output_module).BaseModelOutputWithDeepstackFeatures
        sizes = self._video_sizes(video_grid_thw)
        return output_cls(
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


# --------------------------------------------------------------------------------------------
# the family record
# --------------------------------------------------------------------------------------------
# the pixel budget of Qwen3VLVideoProcessor.size is over all frames (resize="qwen3")
SPEC = qwen_spec("qwen3_vl", 16, resize="qwen3", mean=IMAGENET_STANDARD_MEAN, std=IMAGENET_STANDARD_STD,
                 frame_timestamps_in_prompt=True, default_system=None)

#: Tiny Qwen3-VL rope: interleaved M-RoPE, as the published models use it.
TINY_MROPE_INTERLEAVED = {"rope_type": "default", "mrope_section": TINY_MROPE["mrope_section"],
                          "mrope_interleaved": True, "rope_theta": TINY_MROPE["rope_theta"]}


def qwen3_tiny_vision(patch_size: int = TINY_PATCH) -> dict:
    """The tiny Qwen3-VL tower: two 32-wide blocks, an 8x8 learned position table, a deepstack tap after block 0."""
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TINY_HIDDEN,
                patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                deepstack_visual_indexes=[0])


#: Tiny Qwen3-VL: :func:`qwen3_tiny_vision` tower (``vision`` overrides), interleaved M-RoPE LLM.
tiny_config = qwen_tiny("Qwen3VLConfig", qwen3_tiny_vision, rope=TINY_MROPE_INTERLEAVED)


def _full(hidden: int, llm_inter: int, depth: int, width: int, inter: int, deepstack: list[int], tie: bool) -> dict:
    """A published Qwen3-VL dense architecture: 36-layer LLM of ``hidden``, ``depth``-block ViT of ``width``."""
    return dict(
        model_type="qwen3_vl", **QWEN_IDS,
        text_config=dict(hidden_size=hidden, intermediate_size=llm_inter, num_hidden_layers=36,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                         rms_norm_eps=1e-6, max_position_embeddings=262144, tie_word_embeddings=tie,
                         rope_parameters=dict(rope_type="default", rope_theta=5000000.0, mrope_section=[24, 20, 20],
                                              mrope_interleaved=True)),
        vision_config=dict(depth=depth, hidden_size=width, intermediate_size=inter, num_heads=16,
                           out_hidden_size=hidden, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=2304, deepstack_visual_indexes=deepstack,
                           hidden_act="gelu_pytorch_tanh", in_channels=3),
    )


FAMILY = Family.of(
    "Qwen3VL", tiny_config, Qwen3VLAdapter,
    spec=SPEC,
    vision_tower="Qwen3VLVisionModel",
    full_size={
        "qwen3-vl-4b": _full(2560, 9728, 24, 1024, 4096, [5, 11, 17], True),  # Qwen/Qwen3-VL-4B-Instruct
        "qwen3-vl-8b": _full(4096, 12288, 27, 1152, 4304, [8, 16, 24], False),  # Qwen/Qwen3-VL-8B-Instruct
    },
)
