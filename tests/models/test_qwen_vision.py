"""Encoding a kept subset of merge units with the Qwen2-VL / Qwen2.5-VL vision towers."""

from __future__ import annotations

import functools

import pytest
import torch

import builders as B
from vision_reference import reference_encode
from videoprune.models.qwen_vision import (encode_kept_units, embed_patches, merge_units, run_blocks,
                                           select_units, unit_layout)

FAMILIES = ("qwen2_vl", "qwen2_5_vl")
ROW = 3 * 2 * B.QWEN_PATCH * B.QWEN_PATCH
# two videos in one call: 3 slices of 8x8 patches (2x2 windows of 2x2 units in Qwen2.5-VL) and
# 2 slices of 6x10 patches (3x5 units: windows cut at the grid edge)
GRIDS = [(3, 8, 8), (2, 6, 10)]


@functools.lru_cache(maxsize=None)
def _visual(family: str):
    """A 3-block random vision tower (Qwen2.5-VL: blocks 0 and 2 windowed, block 1 full attention)."""
    import transformers as tf

    torch.manual_seed(0)
    common = dict(depth=3, num_heads=2, patch_size=B.QWEN_PATCH, spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_vl":
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel as M

        cfg = tf.Qwen2VLConfig(vision_config=dict(embed_dim=32, hidden_size=B.HIDDEN, mlp_ratio=2, **common))
    else:
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel as M

        cfg = tf.Qwen2_5_VLConfig(vision_config=dict(hidden_size=32, intermediate_size=64, out_hidden_size=B.HIDDEN,
                                                     window_size=8, fullatt_block_indexes=[1], **common))
    return M._from_config(cfg.vision_config).eval()


def _pixels(grids, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(sum(t * h * w for t, h, w in grids), ROW, generator=g)


def _n_units(grids):
    return sum(t * h * w for t, h, w in grids) // 4


def _random_keep(grids, seed=1, p=0.5, empty_slice=None):
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(_n_units(grids), generator=g) < p
    if empty_slice is not None:  # (start, length) in units
        keep[empty_slice[0] : empty_slice[0] + empty_slice[1]] = False
    return keep


@pytest.mark.parametrize("family", FAMILIES)
def test_all_kept_equals_unpatched_encoder_exactly(family):
    """Keeping every unit reproduces visual(pixels, grid).pooler_output bit for bit (batched videos)."""
    visual = _visual(family)
    px, grid = _pixels(GRIDS), torch.tensor(GRIDS)
    with torch.no_grad():
        want = visual(px, grid_thw=grid).pooler_output
        got = encode_kept_units(visual, px, grid, torch.ones(_n_units(GRIDS), dtype=torch.bool))
        got_none = encode_kept_units(visual, px, grid)
    assert torch.equal(got, want)
    assert torch.equal(got_none, want)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [1, 2])
def test_subset_equals_per_slice_reference(family, seed):
    """Kept units' features equal encoding each slice's kept units alone (windows restricted to kept units)."""
    visual = _visual(family)
    px, grid = _pixels(GRIDS, seed), torch.tensor(GRIDS)
    keep = _random_keep(GRIDS, seed, empty_slice=(16, 16))  # slice 1 of video 0 keeps nothing
    with torch.no_grad():
        got = encode_kept_units(visual, px, grid, keep)
        want = reference_encode(visual, px, GRIDS, keep)
    assert got.shape == (int(keep.sum()), want.shape[1])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_kept_pixel_rows_only_give_the_same_features(family):
    """Passing only the kept patch rows equals passing all rows (the pruned pixels are never touched)."""
    visual = _visual(family)
    px, grid, keep = _pixels(GRIDS), torch.tensor(GRIDS), _random_keep(GRIDS)
    layout = unit_layout(visual, grid, keep)
    with torch.no_grad():
        a = encode_kept_units(visual, px, grid, keep)
        b = encode_kept_units(visual, px[layout.patches], grid, keep, layout=layout)
    assert torch.equal(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_resuming_after_block_k_equals_one_pass(family):
    """run_blocks on all units up to k, then encode kept units from k+1, equals the same split by hand."""
    visual = _visual(family)
    px, grid, keep = _pixels(GRIDS), torch.tensor(GRIDS), _random_keep(GRIDS)
    full, kept = unit_layout(visual, grid), unit_layout(visual, grid, keep)
    with torch.no_grad():
        h = run_blocks(visual, embed_patches(visual, px, full), full, blocks=[0, 1])
        got = encode_kept_units(visual, None, grid, keep, start_block=2, hidden=h)
        by_hand = merge_units(visual, run_blocks(visual, select_units(h, kept), kept, blocks=[2]), kept)
        all_one_pass = encode_kept_units(visual, px, grid)
        all_split = encode_kept_units(visual, None, grid, start_block=2, hidden=h)
    torch.testing.assert_close(got, by_hand, rtol=0, atol=0)
    torch.testing.assert_close(all_split, all_one_pass, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_key_bias_matches_reference(family):
    """An additive key bias in the first block equals dense attention with that bias on the logits."""
    visual = _visual(family)
    px, grid, keep = _pixels(GRIDS), torch.tensor(GRIDS), _random_keep(GRIDS, p=0.7)
    n = int(keep.sum()) * 4
    bias = -2 * torch.rand(n, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = encode_kept_units(visual, px, grid, keep, key_bias=bias)
        want = reference_encode(visual, px, GRIDS, keep, key_bias_first=bias)
        zero = encode_kept_units(visual, px, grid, keep, key_bias=torch.zeros(n))
        plain = encode_kept_units(visual, px, grid, keep)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zero, plain, rtol=1e-5, atol=1e-5)


def test_key_bias_is_differentiable():
    """Gradients reach the key bias (STTS trains its scorer through it)."""
    visual = _visual("qwen2_5_vl")
    px, grid = _pixels(GRIDS), torch.tensor(GRIDS)
    bias = torch.zeros(sum(t * h * w for t, h, w in GRIDS), requires_grad=True)
    encode_kept_units(visual, px, grid, key_bias=bias).sum().backward()
    assert bias.grad is not None and bool(bias.grad.abs().sum() > 0)


def test_errors_name_the_argument():
    """Wrong keep shape/dtype, a wrong encoder and bad blocks raise ValueError."""
    visual = _visual("qwen2_vl")
    grid = torch.tensor(GRIDS)
    with pytest.raises(ValueError, match="keep_units"):
        unit_layout(visual, grid, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep_units"):
        unit_layout(visual, grid, torch.ones(_n_units(GRIDS)))
    with pytest.raises(ValueError, match="visual"):
        unit_layout(torch.nn.Linear(2, 2), grid)
    with pytest.raises(ValueError, match="blocks"):
        run_blocks(visual, torch.zeros(_n_units(GRIDS) * 4, 32), unit_layout(visual, grid), blocks=[5])
