"""EVSConfig(stage="pre_encoder") on Qwen3-VL: kept-unit tower with deepstack, kept LLM inputs, generate.

The family-independent rules (rate 0 is bit-identical, same LLM positions and mask as the
post-encoder pixel run, per-slice main features, only kept patches embedded, generate at rate 0)
run for Qwen3-VL in test_pre_encoder.py; this file adds what is Qwen3-VL's own: learned
interpolated position embeddings, deepstack features, timestamps between frames.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch

import builders as B
import reference as R
import videoprune
from builders import patched
from vision_reference import reference_encode_deepstack
from videoprune.core.evs import pixel_retention_mask
from videoprune.models.qwen_vision import encode_kept_units, encode_kept_units_deepstack
from videoprune.models.vision_attention import enable_fast_vision_attention

RATE = 0.5
ATOL = 1e-5
ROW = 3 * 2 * B.QWEN_PATCH * B.QWEN_PATCH
# tower tests: two videos in one call, 3 slices of 8x8 patches and 2 slices of 6x10 (non-square)
GRIDS = [(3, 8, 8), (2, 6, 10)]
# LLM tests: videos of different lengths and grids in one batch, left padding; one prompt has two
PROMPTS = [[("text", 3), ("video", 3, 8, 8), ("text", 4)],
           [("text", 7), ("video", 6, 8, 8), ("text", 2)],
           [("text", 1), ("video", 2, 6, 10), ("text", 9), ("video", 4, 8, 8), ("text", 1)]]
# an image beside a video: deepstack rows of image and video tokens are joined in one tensor
WITH_IMAGE = [[("text", 2), ("image",), ("text", 2), ("video", 3, 8, 8), ("text", 3)],
              [("text", 4), ("video", 4, 6, 10), ("text", 1)]]
BATCHES = pytest.mark.parametrize("prompts", [PROMPTS, WITH_IMAGE], ids=["videos", "with_image"])


def _cfg(rate=RATE):
    return videoprune.EVSConfig(rate=rate, criterion="pixel", stage="pre_encoder")


@functools.lru_cache(maxsize=None)
def _tower():
    """A 3-block random Qwen3-VL tower, deepstack taps after blocks 0 and 2, a 5x5 learned position table."""
    import transformers as tf
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

    torch.manual_seed(0)
    cfg = tf.Qwen3VLConfig(vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2,
                                              out_hidden_size=B.HIDDEN, patch_size=B.QWEN_PATCH, spatial_merge_size=2,
                                              temporal_patch_size=2, num_position_embeddings=25,
                                              deepstack_visual_indexes=[0, 2]))
    return Qwen3VLVisionModel._from_config(cfg.vision_config).eval()


def _pixels(grids, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(sum(t * h * w for t, h, w in grids), ROW, generator=g)


def _random_keep(grids, seed=1):
    """About half the units; the second slice of the first video loses all of them."""
    keep = torch.rand(sum(t * h * w for t, h, w in grids) // 4, generator=torch.Generator().manual_seed(seed)) < 0.5
    per_slice = grids[0][1] * grids[0][2] // 4
    keep[per_slice : 2 * per_slice] = False
    return keep


@contextlib.contextmanager
def _attention(model, kind):
    if kind == "sdpa":
        yield
        return
    with enable_fast_vision_attention(model):
        yield


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


# ---- the kept-unit tower ---------------------------------------------------------------------------

def test_all_kept_equals_the_tower_exactly():
    """Every unit kept: main and every deepstack feature equal visual(pixels, grid) bit for bit."""
    visual = _tower()
    px = _pixels(GRIDS)
    with torch.no_grad():
        want = visual(px, grid_thw=torch.tensor(GRIDS))
        feats, deep = encode_kept_units_deepstack(visual, px, GRIDS)
    assert torch.equal(feats, want.pooler_output)
    assert len(deep) == len(want.deepstack_features) == 2
    for got, ref in zip(deep, want.deepstack_features):
        assert torch.equal(got, ref)


@pytest.mark.parametrize("attention", ["sdpa", "fast"])
def test_kept_units_equal_per_slice_reference_main_and_deepstack(attention):
    """Each slice's kept patches encoded alone (dense masked attention, F.interpolate position table):
    main and deepstack features within 1e-5, with the tower's SDPA or fast vision attention."""
    visual = _tower()
    px, keep = _pixels(GRIDS), _random_keep(GRIDS)
    with torch.no_grad():
        want, want_deep = reference_encode_deepstack(visual, px, GRIDS, keep)
        with _attention(visual, attention):
            feats, deep = encode_kept_units_deepstack(visual, px, GRIDS, keep)
            main_only = encode_kept_units(visual, px, GRIDS, keep)
    assert feats.shape == (int(keep.sum()), B.HIDDEN) and len(deep) == len(want_deep) == 2
    torch.testing.assert_close(feats, want, atol=ATOL, rtol=0)
    for got, ref in zip(deep, want_deep):
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    assert torch.equal(main_only, feats)


def test_fast_attention_makes_one_call_per_block_and_segment_length(monkeypatch):
    """With fast vision attention the kept-unit tower makes one SDPA call per distinct kept-slice
    length in each block (not one per slice)."""
    import torch.nn.functional as F

    from videoprune.models.qwen_vision import unit_layout

    visual = _tower()
    px, keep = _pixels(GRIDS), _random_keep(GRIDS)
    cu = unit_layout(visual, GRIDS, keep).cu_seqlens
    lengths = (cu[1:] - cu[:-1]).tolist()
    calls, real = [], F.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad(), enable_fast_vision_attention(visual):
        encode_kept_units_deepstack(visual, px, GRIDS, keep)
    assert len(calls) == len(visual.blocks) * len(set(lengths)) < len(visual.blocks) * len(lengths)


def test_kept_rows_of_pixels_alone_give_the_same_features():
    """Passing only the kept patch rows (not all) gives the same features and deepstack, bit for bit."""
    from videoprune.models.qwen_vision import unit_layout

    visual = _tower()
    px, keep = _pixels(GRIDS), _random_keep(GRIDS)
    layout = unit_layout(visual, GRIDS, keep)
    with torch.no_grad():
        a = encode_kept_units_deepstack(visual, px, GRIDS, keep)
        b = encode_kept_units_deepstack(visual, px[layout.patches], GRIDS, keep, layout=layout)
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


# ---- the patched model -----------------------------------------------------------------------------

@BATCHES
def test_rate_zero_logits_identical_to_unpatched(tiny, prompts):
    """Rate 0 reproduces the unpatched model's logits exactly (different video lengths, an image)."""
    model = tiny("qwen3_vl")
    inputs = B.make_inputs("qwen3_vl", prompts, model=model)
    before = logits(model, inputs)
    with patched(model, _cfg(0.0)):
        after = logits(model, inputs)
    assert torch.equal(before, after)


@BATCHES
def test_pruned_logits_equal_kept_embeddings_at_original_positions(tiny, prompts):
    """Pruned logits = the unpatched LLM fed by hand the per-slice kept features and kept deepstack
    features at the kept tokens' original positions (reference.reference_logits, pre_encoder=True)."""
    model = tiny("qwen3_vl")
    inputs = B.make_inputs("qwen3_vl", prompts, model=model)
    ref = R.reference_logits("qwen3_vl", model, inputs, RATE, pre_encoder=True)
    real = R.reference_prefill("qwen3_vl", model, inputs, RATE, pre_encoder=True)[2].bool()
    with patched(model, _cfg()) as handle:
        out = logits(model, inputs)
        assert handle.stats.tokens_after < handle.stats.tokens_before
    assert out.shape == ref.shape
    torch.testing.assert_close(out[real], ref[real], atol=ATOL, rtol=0)


def test_deepstack_changes_the_logits_so_the_reference_checks_it(tiny):
    """Guard: dropping the kept deepstack features moves the logits far beyond the tolerance above."""
    model = tiny("qwen3_vl")
    inputs = B.make_inputs("qwen3_vl", PROMPTS, model=model)
    e, p, m, extra, _ = R.reference_prefill("qwen3_vl", model, inputs, RATE, pre_encoder=True)
    lm = model.model.language_model
    with torch.no_grad():
        with_deep = lm(inputs_embeds=e, position_ids=p, attention_mask=m, **extra).last_hidden_state
        zeroed = dict(extra, deepstack_visual_embeds=[torch.zeros_like(d) for d in extra["deepstack_visual_embeds"]])
        without = lm(inputs_embeds=e, position_ids=p, attention_mask=m, **zeroed).last_hidden_state
    assert (with_deep - without)[m.bool()].abs().max() > 1e3 * ATOL


class DeepstackMasks:
    """Records the visual_pos_masks the language model adds deepstack features with (after the patch)."""

    def __init__(self, monkeypatch, model):
        lm = model.model.language_model
        self.masks, real = [], lm._deepstack_process

        def recording(hidden_states, visual_pos_masks, visual_embeds):
            self.masks.append(visual_pos_masks)
            return real(hidden_states, visual_pos_masks, visual_embeds)

        monkeypatch.setattr(lm, "_deepstack_process", recording)


def test_selection_is_the_post_encoder_pixel_selection_token_for_token(tiny, monkeypatch):
    """Pre- and post-encoder pixel EVS keep the same tokens: same per-frame counts, the same deepstack
    positions in the pruned sequence, and exactly the hand-pruned core.evs.pixel_retention_mask (so
    each frame's kept tokens sit between its own timestamp and the next one)."""
    model = tiny("qwen3_vl")
    inputs = B.make_inputs("qwen3_vl", PROMPTS, model=model)
    rec = DeepstackMasks(monkeypatch, model)
    with patched(model, videoprune.EVSConfig(rate=RATE, criterion="pixel")) as h:
        logits(model, inputs)
        post, post_stats = rec.masks[-1], h.stats
    with patched(model, _cfg()) as h:
        logits(model, inputs)
        pre, pre_stats = rec.masks[-1], h.stats
    assert pre_stats == post_stats
    assert torch.equal(pre, post)
    keep = pixel_retention_mask(inputs["pixel_values_videos"], inputs["video_grid_thw"], 2, rate=RATE)
    _, _, m, _, rows = R.reference_prefill("qwen3_vl", model, inputs, RATE, pre_encoder=True)
    want = torch.zeros_like(pre)
    for i, r in enumerate(rows):
        want[i, m.shape[1] - len(r):] = inputs["input_ids"][i, r] == B.VIDEO_TOKEN
    assert torch.equal(pre, want)
    assert int(pre.sum()) == int(keep.sum())


def test_greedy_generate_equals_reference_decode(tiny):
    """generate() with pre-encoder pruning = an explicit greedy decode over the hand-pruned prompt
    (kept features + deepstack, original positions, decoding from the unpruned next position)."""
    model = tiny("qwen3_vl")
    inputs = B.make_inputs("qwen3_vl", PROMPTS, model=model)
    ref = R.reference_greedy("qwen3_vl", model, inputs, RATE, steps=8, pre_encoder=True)
    with patched(model, _cfg()), torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(out[:, -8:], ref)


def test_generate_at_rate_zero_equals_unpatched(tiny):
    """generate() at rate 0 returns the unpatched tokens (videos of different lengths)."""
    model = tiny("qwen3_vl")
    inputs = B.make_inputs("qwen3_vl", PROMPTS, model=model)
    with torch.no_grad():
        want = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        with patched(model, _cfg(0.0)):
            got = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, want)


@BATCHES
def test_fast_vision_attention_gives_the_same_logits(tiny, prompts):
    """With enable_fast_vision_attention on, the pruned logits are the same within 1e-5."""
    model = tiny("qwen3_vl")
    inputs = B.make_inputs("qwen3_vl", prompts, model=model)
    with patched(model, _cfg()):
        off = logits(model, inputs)
        with enable_fast_vision_attention(model):
            on = logits(model, inputs)
    torch.testing.assert_close(on, off, atol=ATOL, rtol=0)
