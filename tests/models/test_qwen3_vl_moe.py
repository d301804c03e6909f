"""Qwen3-VL-MoE, added as one file + one registry line: EVS on a tiny random MoE model is exact.

The family is in ``builders.FAMILIES``, so every rule of test_patch.py and test_patch_labels.py
(rate 0 bit-identical, the gather reference, greedy decode, ...) runs on it too. Here: that its
record builds an MoE model served by its adapter, and pre-encoder EVS on it.
"""

from __future__ import annotations

import pytest
import torch

import builders as B
import reference as R
import videoprune
from builders import patched
from videoprune.core.evs import pixel_retention_mask
from videoprune.models import adapter_for, family_for
from videoprune.models.qwen3_vl_moe import Qwen3VLMoeAdapter
from videoprune.video import get_family

FAMILY = "qwen3_vl_moe"
ATOL = 1e-5
PADDED = [[("text", 3), ("video",), ("text", 4)], [("text", 7), ("video",), ("text", 2)],
          [("text", 1), ("video",), ("text", 9), ("video",), ("text", 1)]]


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_tiny_record_builds_a_mixture_of_experts_model_served_by_its_adapter(tiny):
    """The record's tiny config is a real MoE model (routed experts in the LLM), and patch() picks its adapter."""
    model = tiny(FAMILY)
    assert type(model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    assert model.config.text_config.num_experts > 1
    assert any("experts" in name for name, _ in model.named_modules())
    assert isinstance(adapter_for(model), Qwen3VLMoeAdapter)
    assert family_for(model).spec is get_family("qwen3_vl")


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_pre_encoder_equals_reference(tiny, rate):
    """Pre-encoder EVS: rate 0 is exact; otherwise the logits equal the per-slice kept-unit reference."""
    model = tiny(FAMILY)
    inputs = B.make_inputs(FAMILY, PADDED, model=model)
    cfg = videoprune.EVSConfig(rate=rate, criterion="pixel", stage="pre_encoder")
    with patched(model, cfg):
        out = logits(model, inputs)
    if rate == 0.0:
        assert torch.equal(out, logits(model, inputs))
        return
    ref = R.reference_logits(FAMILY, model, inputs, rate, pre_encoder=True)
    real = R.reference_prefill(FAMILY, model, inputs, rate, pre_encoder=True)[2].bool()
    torch.testing.assert_close(out[real], ref[real], atol=ATOL, rtol=0)


def test_pre_encoder_encodes_only_kept_patches(tiny):
    """The MoE model's vision tower embeds only the kept merge units' patches (pruned pixels never encoded)."""
    model = tiny(FAMILY)
    inputs = B.make_inputs(FAMILY, PADDED, model=model)
    rows = []
    hook = model.model.visual.patch_embed.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    try:
        with patched(model, videoprune.EVSConfig(rate=0.5, criterion="pixel", stage="pre_encoder")):
            logits(model, inputs)
    finally:
        hook.remove()
    px, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    keep = pixel_retention_mask(px, grid, 2, rate=0.5)
    assert sum(rows) == int(keep.sum()) * 4 < px.shape[0]
