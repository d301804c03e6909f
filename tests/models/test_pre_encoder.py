"""EVSConfig(stage="pre_encoder"): pixel selection before the encoder, which encodes kept tokens only."""

from __future__ import annotations

import pytest
import torch

import builders as B
import videoprune
from builders import patched
from vision_reference import reference_encode
from videoprune.core.evs import pixel_retention_mask

RATE = 0.5
PRE = pytest.mark.parametrize("family", ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"))
# three prompts, four videos: batched encoding in one encoder call, left padding
PADDED = [[("text", 3), ("video",), ("text", 4)], [("text", 7), ("video",), ("text", 2)],
          [("text", 1), ("video",), ("text", 9), ("video",), ("text", 1)]]


class Recorder:
    """What the decoder gets (embeddings, position ids, 4D mask) and how many patch rows the encoder embeds."""

    def __init__(self, model):
        lm = model.model.language_model
        self.seen, self.patch_rows = {}, 0
        self._hooks = [
            lm.rotary_emb.register_forward_pre_hook(self._rotary),
            lm.layers[0].register_forward_pre_hook(self._layer, with_kwargs=True),
            model.model.visual.patch_embed.register_forward_pre_hook(self._patches),
        ]

    def _rotary(self, module, args):
        self.seen["embeds"], self.seen["positions"] = args[0], args[1]

    def _layer(self, module, args, kwargs):
        self.seen["mask"] = kwargs.get("attention_mask")

    def _patches(self, module, args):
        self.patch_rows += args[0].shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()


def run(model, inputs, cfg):
    with Recorder(model) as rec, patched(model, cfg), torch.no_grad():
        out = model(**inputs).logits
    return out, rec


def _pruned_ids(inputs, keep):
    """(B, L') input ids of the hand-pruned, left-padded batch (video placeholders kept by ``keep``)."""
    ids, attn = inputs["input_ids"], inputs["attention_mask"].bool()
    vmask = ids == B.VIDEO_TOKEN
    k = attn.clone()
    k[vmask] = keep
    rows = [ids[i][k[i]] for i in range(ids.shape[0])]
    n = max(len(r) for r in rows)
    out = torch.full((ids.shape[0], n), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, n - len(r):] = r
    return out


@PRE
def test_rate_zero_logits_identical_to_unpatched(tiny, family):
    """Pre-encoder pruning at rate 0 reproduces the unpatched model exactly (batched videos)."""
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    with torch.no_grad():
        before = model(**inputs).logits
    after, _ = run(model, inputs, videoprune.EVSConfig(rate=0.0, stage="pre_encoder", criterion="pixel"))
    assert torch.equal(before, after)


@PRE
def test_llm_input_equals_post_encoder_pixel_run_except_video_features(tiny, family):
    """Same kept tokens, positions and mask as post-encoder pixel EVS; text embeddings identical."""
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    _, post = run(model, inputs, videoprune.EVSConfig(rate=RATE, criterion="pixel"))
    _, pre = run(model, inputs, videoprune.EVSConfig(rate=RATE, criterion="pixel", stage="pre_encoder"))
    assert torch.equal(pre.seen["positions"], post.seen["positions"])
    assert torch.equal(pre.seen["mask"], post.seen["mask"])
    keep = pixel_retention_mask(inputs["pixel_values_videos"], inputs["video_grid_thw"], 2, rate=RATE)
    ids = _pruned_ids(inputs, keep)
    assert pre.seen["embeds"].shape[:2] == ids.shape
    text = (ids != B.VIDEO_TOKEN) & (ids >= 0)
    assert torch.equal(pre.seen["embeds"][text], post.seen["embeds"][text])


@PRE
def test_video_features_equal_per_slice_reference_and_pruned_pixels_are_never_encoded(tiny, family):
    """Kept video tokens carry the per-slice kept-unit encoding; the encoder embeds only kept patches."""
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    _, pre = run(model, inputs, videoprune.EVSConfig(rate=RATE, criterion="pixel", stage="pre_encoder"))
    px, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    keep = pixel_retention_mask(px, grid, 2, rate=RATE)
    ids = _pruned_ids(inputs, keep)
    with torch.no_grad():
        want = reference_encode(model.model.visual, px, grid.tolist(), keep)
    torch.testing.assert_close(pre.seen["embeds"][ids == B.VIDEO_TOKEN], want, rtol=1e-5, atol=1e-5)
    assert pre.patch_rows == int(keep.sum()) * 4 < px.shape[0]


@PRE
def test_greedy_generate_runs_pruned_and_rate_zero_matches_unpatched(tiny, family):
    """generate() works with pre-encoder pruning; at rate 0 it returns the unpatched tokens."""
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED[:2], model=model)
    with torch.no_grad():
        want = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        with patched(model, videoprune.EVSConfig(rate=0.0, criterion="pixel", stage="pre_encoder")):
            got = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        with patched(model, videoprune.EVSConfig(rate=0.75, criterion="pixel", stage="pre_encoder")) as h:
            pruned = model.generate(**inputs, max_new_tokens=3, do_sample=False)
            assert h.stats.tokens_after < h.stats.tokens_before
    assert torch.equal(got, want)
    assert pruned.shape == want.shape


def test_other_families_reject_pre_encoder_naming_the_supported_ones(tiny):
    """Families without pre-encoder support raise, listing the families that have it."""
    with pytest.raises(ValueError, match="qwen2_5_vl, qwen2_vl, qwen3_vl"):
        videoprune.patch(tiny("llava_onevision"), videoprune.EVSConfig(rate=RATE, criterion="pixel", stage="pre_encoder"))
