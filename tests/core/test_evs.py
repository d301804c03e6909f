"""Rules of EVS selection (methods.md §1.1, §1.2), each checked against a slow explicit reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from videoprune.core import evs
from videoprune.core.evs import (
    embedding_dissimilarity,
    pixel_dissimilarity,
    pixel_retention_mask,
    retained_count,
    retention_mask,
    threshold_mask,
)

MERGE = 2
PATCH = 2  # spatial patch of the toy pixel layout
TEMPORAL_PATCH = 2
CHANNELS = 3


# --------------------------------------------------------------------------------------------
# slow, obviously-correct references
# --------------------------------------------------------------------------------------------
def reference_mask(features: torch.Tensor, grids, merge: int, rate: float) -> torch.Tensor:
    """Per video: d = 1 - F.cosine_similarity token by token (in the features' dtype, as the engines
    compute it), frame 0 first, then a Python sort on (-d, index)."""
    masks, start = [], 0
    for t, h, w in grids:
        hw = (h // merge) * (w // merge)
        n = t * hw
        x = features[start : start + n]
        d = [math.inf] * hw
        for i in range(hw, n):
            d.append(float(1 - F.cosine_similarity(x[i], x[i - hw], dim=0)))
        k = max(hw, int(n * (1 - rate)))
        ranked = sorted(range(n), key=lambda i: (-d[i], i))
        m = torch.zeros(n, dtype=torch.bool)
        m[ranked[:k]] = True
        masks.append(m)
        start += n
    return torch.cat(masks)


def patchify(video: torch.Tensor, merge: int = MERGE) -> torch.Tensor:
    """(frames, C, H, W) -> Qwen-style rows ((t, h/m, w/m, m, m), C*tp*p*p)."""
    f, c, hh, ww = video.shape
    t, gh, gw = f // TEMPORAL_PATCH, hh // PATCH, ww // PATCH
    x = video.reshape(t, TEMPORAL_PATCH, c, gh // merge, merge, PATCH, gw // merge, merge, PATCH)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * gh * gw, c * TEMPORAL_PATCH * PATCH * PATCH)


def video_grid(frames: int, hh: int, ww: int) -> tuple[int, int, int]:
    return (frames // TEMPORAL_PATCH, hh // PATCH, ww // PATCH)


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------
@st.composite
def videos(draw, quantised=None):
    t = draw(st.integers(1, 6))
    merge = draw(st.sampled_from([1, 2]))
    h = draw(st.integers(1, 3)) * merge
    w = draw(st.integers(1, 3)) * merge
    dim = draw(st.integers(1, 6))
    n = t * (h // merge) * (w // merge)
    seed = draw(st.integers(0, 2**31 - 1))
    q = draw(st.booleans()) if quantised is None else quantised
    g = torch.Generator().manual_seed(seed)
    if q:  # tie-heavy: entries in {-1, 0, 1}; many zero vectors, repeats and equal cosines
        feats = torch.randint(-1, 2, (n, dim), generator=g).float()
    else:
        feats = torch.randn(n, dim, generator=g)
    return feats, (t, h, w), merge


rates = st.floats(0.0, 0.999, allow_nan=False)


# --------------------------------------------------------------------------------------------
# rate mode equals the spec
# --------------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(videos(), rates)
def test_rate_mode_equals_reference_token_for_token(video, rate):
    """The fast mask equals the sort-based reference on random and tie-heavy inputs."""
    feats, grid, merge = video
    assert torch.equal(retention_mask(feats, grid, merge, rate), reference_mask(feats, [grid], merge, rate))


@settings(max_examples=60, deadline=None)
@given(videos(), rates)
def test_frame_zero_is_always_kept_whole(video, rate):
    """Every token of the first temporal slice survives at any rate."""
    feats, (t, h, w), merge = video
    hw = (h // merge) * (w // merge)
    assert retention_mask(feats, (t, h, w), merge, rate)[:hw].all()


@settings(max_examples=60, deadline=None)
@given(videos(), rates)
def test_kept_count_equals_retained_count(video, rate):
    """The mask keeps exactly retained_count(H'W', T', rate) tokens."""
    feats, (t, h, w), merge = video
    hw = (h // merge) * (w // merge)
    assert int(retention_mask(feats, (t, h, w), merge, rate).sum()) == retained_count(hw, t, rate)


@pytest.mark.parametrize(
    "tokens_per_frame, frames, rate, expected",
    [
        (9, 4, 0.0, 36),  # rate 0 keeps everything
        (9, 4, 0.5, 18),
        (9, 1, 0.9, 9),  # a one-frame clip is never pruned
        (10, 3, 0.7, 10),  # int(30 * 0.3000...04) = 9 < one frame, so one frame
        (100, 10, 0.7, 300),  # float rounding of (1 - 0.7) must not lose a token
        (4, 8, 0.999999, 4),  # rate -> 1 keeps only frame 0
        (5, 7, 0.25, 26),  # truncation, not rounding: int(26.25)
    ],
)
def test_retained_count_edge_cases(tokens_per_frame, frames, rate, expected):
    """retained_count = max(H'W', int(T'H'W' (1 - rate))), as the serving engines compute it."""
    assert retained_count(tokens_per_frame, frames, rate) == expected


def test_short_clip_at_high_rate_keeps_only_frame_zero():
    """A short clip at high rate may keep nothing but frame 0 (methods.md §1.1)."""
    feats = torch.randn(3 * 4, 5)
    mask = retention_mask(feats, (3, 4, 4), MERGE, 0.9)
    assert mask.tolist() == [True] * 4 + [False] * 8


def test_static_clip_spends_budget_on_the_frames_that_change():
    """Globally chosen: when only frame 2 changes, every non-frame-0 token kept is from frame 2."""
    base, changed = torch.randn(4, 8), torch.randn(4, 8)
    feats = torch.cat([base, base, changed, changed])
    mask = retention_mask(feats, (4, 4, 4), MERGE, 0.5)  # keeps 8 = frame 0 + 4 more
    assert mask.view(4, 4).sum(1).tolist() == [4, 0, 4, 0]


# --------------------------------------------------------------------------------------------
# dissimilarity arithmetic
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block_bytes", [1, 64, 200, 1 << 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dissimilarity_is_bit_identical_to_cosine_similarity(monkeypatch, block_bytes, dtype):
    """Blocked, normalise-once arithmetic equals 1 - F.cosine_similarity exactly, at every block size."""
    monkeypatch.setattr(evs, "_BLOCK_BYTES_CPU", block_bytes)
    t, hw, dim = 7, 6, 5
    feats = torch.randn(t * hw, dim).to(dtype)
    x = feats.view(t, hw, dim)
    expected = 1 - F.cosine_similarity(x[1:], x[:-1], dim=-1)
    got = embedding_dissimilarity(feats, (t, 3, 2), 1)
    assert torch.isinf(got[:hw]).all()
    assert torch.equal(got[hw:], expected.reshape(-1))
    assert got.dtype == dtype


def test_zero_vectors_have_dissimilarity_one_not_nan():
    """A zero feature vector has cosine 0 with anything: d = 1 for it and for its successor."""
    feats = torch.randn(3 * 2, 4)
    feats[2] = 0.0  # frame 1, token 0
    d = embedding_dissimilarity(feats, (3, 2, 1), 1)
    assert not torch.isnan(d).any()
    assert d[2].item() == 1.0 and d[4].item() == 1.0


def test_all_zero_video_selects_lowest_raster_indices():
    """With every d equal, ties go to the lower raster index: frames kept in order."""
    feats = torch.zeros(4 * 3, 2)
    mask = retention_mask(feats, (4, 3, 1), 1, 0.5)  # keeps 6 of 12
    assert mask.tolist() == [True] * 6 + [False] * 6


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.75])
@pytest.mark.parametrize("as_tensor", [True, False])
def test_batch_equals_per_video_calls(rate, as_tensor):
    """Concatenated videos with different grids are each selected independently."""
    grids = [(3, 4, 4), (1, 2, 6), (5, 6, 2)]
    parts = [torch.randn(t * (h // MERGE) * (w // MERGE), 8) for t, h, w in grids]
    grid_arg = torch.tensor(grids) if as_tensor else grids
    batched = retention_mask(torch.cat(parts), grid_arg, MERGE, rate)
    alone = torch.cat([retention_mask(p, g, MERGE, rate) for p, g in zip(parts, grids)])
    assert torch.equal(batched, alone)


def test_batch_matches_reference():
    """The batched mask equals the reference on several videos at once."""
    grids = [(2, 2, 4), (4, 4, 4)]
    feats = torch.randint(-1, 2, (2 * 2 + 4 * 4, 3)).float()
    assert torch.equal(retention_mask(feats, grids, MERGE, 0.6), reference_mask(feats, grids, MERGE, 0.6))


# --------------------------------------------------------------------------------------------
# threshold mode
# --------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(videos(quantised=False), st.floats(0.0, 2.0), st.floats(0.0, 2.0))
def test_threshold_mode_is_monotone(video, tau_a, tau_b):
    """A higher threshold keeps a subset of what a lower one keeps."""
    feats, grid, merge = video
    lo, hi = sorted((tau_a, tau_b))
    keep_lo = threshold_mask(feats, grid, merge, lo)
    keep_hi = threshold_mask(feats, grid, merge, hi)
    assert not (keep_hi & ~keep_lo).any()


def test_threshold_keeps_exactly_tokens_above_tau_plus_frame_zero():
    """Without bounds, kept = frame 0 + {d > tau}."""
    feats = torch.randn(5 * 4, 6)
    d = embedding_dissimilarity(feats, (5, 2, 2), 1)
    mask = threshold_mask(feats, (5, 2, 2), 1, 0.9)
    expected = d > 0.9
    expected[:4] = True
    assert torch.equal(mask, expected)


def test_static_clip_keeps_fewer_tokens_than_busy_clip():
    """Threshold mode is content-adaptive: a near-static clip keeps fewer tokens."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 32, generator=g)
    static = torch.cat([base + 0.01 * torch.randn(16, 32, generator=g) for _ in range(8)])
    busy = torch.randn(8 * 16, 32, generator=g)
    n_static = int(threshold_mask(static, (8, 4, 4), 1, 0.2).sum())
    n_busy = int(threshold_mask(busy, (8, 4, 4), 1, 0.2).sum())
    assert n_static == 16 and n_busy > 100


@pytest.mark.parametrize("lo, hi", [(0.5, 1.0), (0.0, 0.3), (0.4, 0.4)])
def test_threshold_bounds_clamp_the_kept_fraction(lo, hi):
    """min/max_keep_fraction bound the kept count (never below one frame)."""
    t, hw = 10, 4
    feats = torch.randn(t * hw, 8)
    n = t * hw
    for tau in (0.0, 0.5, 1.0, 1.9):
        k = int(threshold_mask(feats, (t, 2, 2), 1, tau, lo, hi).sum())
        assert max(hw, math.ceil(lo * n)) <= k <= max(hw, math.floor(hi * n))


def test_threshold_bounds_take_the_most_dissimilar_tokens():
    """When the floor forces extra tokens, they are the largest-d ones (same order as rate mode)."""
    feats = torch.randn(6 * 4, 8)
    forced = threshold_mask(feats, (6, 2, 2), 1, 10.0, min_keep_fraction=0.5)
    assert torch.equal(forced, retention_mask(feats, (6, 2, 2), 1, 0.5))


# --------------------------------------------------------------------------------------------
# pixel criterion
# --------------------------------------------------------------------------------------------
def test_pixel_variant_finds_the_one_moving_patch():
    """On a static clip where one LLM token's patch changes, only that token scores above 0."""
    frames, hh, ww = 6, 8, 8  # 3 temporal slices, 4x4 patches, 2x2 LLM tokens per slice
    video = torch.rand(1, CHANNELS, hh, ww).repeat(frames, 1, 1, 1)
    # LLM token (h'=1, w'=0) covers pixel rows 4..7, cols 0..3; change it from frame 4 on (slice 2)
    video[4:, :, 4:8, 0:4] += 0.5
    grid = video_grid(frames, hh, ww)
    pixels = patchify(video)
    d = pixel_dissimilarity(pixels, grid, MERGE)
    assert torch.isinf(d[:4]).all()
    moved = torch.zeros(8, dtype=torch.bool)
    moved[4 + 2] = True  # slice 2 (second entry of d[4:]'s two slices), token 2 = (h'=1, w'=0)
    assert (d[4:] > 0).tolist() == moved.tolist()
    assert d[4 + 4 + 2].item() == pytest.approx(0.5, rel=1e-5)
    mask = pixel_retention_mask(pixels, grid, MERGE, rate=0.55)  # keeps int(12 * 0.45) = 5 = 4 + 1
    assert mask.tolist() == [True] * 4 + [False] * 6 + [True] + [False]


def test_pixel_dissimilarity_is_mean_abs_difference_per_token():
    """d equals mean |x_t - x_{t-1}| over the merge**2 patch rows of one LLM token."""
    pixels = torch.randn(3 * 2 * MERGE**2, 12)  # grid (3, 4, 2): 2 LLM tokens per slice
    d = pixel_dissimilarity(pixels, (3, 4, 2), MERGE)
    x = pixels.view(3, 2, MERGE**2 * 12)
    assert torch.allclose(d[2:], (x[1:] - x[:-1]).abs().mean(-1).reshape(-1))


@pytest.mark.parametrize("block_bytes", [1, 300, 1 << 20])
def test_pixel_dissimilarity_is_the_same_at_every_block_size(monkeypatch, block_bytes):
    """The blocked pixel pass equals the one-shot mean |x_t - x_{t-1}| bit for bit."""
    monkeypatch.setattr(evs, "_BLOCK_BYTES_CPU", block_bytes)
    pixels = torch.randn(5 * 6 * MERGE**2, 12)
    x = pixels.view(5, 6, MERGE**2 * 12)
    expected = (x[1:] - x[:-1]).abs().mean(-1).reshape(-1)
    assert torch.equal(pixel_dissimilarity(pixels, (5, 4, 6), MERGE)[6:], expected)


def test_pixel_threshold_mode_is_available():
    """pixel_retention_mask accepts a threshold instead of a rate."""
    pixels = torch.zeros(2 * 4 * 4, 12)
    pixels[16:20] = 1.0  # slice 1, token 0 changes
    mask = pixel_retention_mask(pixels, (2, 4, 4), 2, threshold=0.5)
    assert mask.tolist() == [True] * 4 + [True, False, False, False]


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
GOOD = torch.randn(2 * 4, 3)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_rate_outside_unit_interval_is_rejected(rate):
    """A rate that is not a real number in [0, 1) (negative, 1 or more, NaN, a string, a bool, None) is refused with an
    error naming rate."""
    with pytest.raises(ValueError, match="rate"):
        retention_mask(GOOD, (2, 4, 4), MERGE, rate)


@pytest.mark.parametrize(
    "grid, match",
    [
        ((3, 4, 4), "implies 12"),  # count mismatch
        ((2, 3, 4), "multiples of spatial_merge_size"),
        ((0, 4, 4), "positive"),
        ((2, 4), "three ints"),
        (torch.tensor([2.0, 4.0, 4.0]), "integers"),
        (torch.tensor([[2, 4, 4, 1]]), "shape"),
        ([], "at least one video"),
    ],
)
def test_bad_grid_is_rejected(grid, match):
    """A grid that disagrees with the feature count, is not a multiple of the merge size, is empty, non-positive,
    non-integer or misshapen is refused with a message saying which."""
    with pytest.raises(ValueError, match=match):
        retention_mask(GOOD, grid, MERGE, 0.5)


@pytest.mark.parametrize("merge", [0, -2, 1.5, True])
def test_bad_merge_size_is_rejected(merge):
    """spatial_merge_size must be a positive int: zero, negative, fractional and bool values are refused."""
    with pytest.raises(ValueError, match="spatial_merge_size"):
        retention_mask(GOOD, (2, 4, 4), merge, 0.5)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("row", [0, 7])
def test_non_finite_features_are_rejected(value, row):
    """A NaN or infinite feature in frame 0 or a later frame is refused, because it would silently corrupt the
    dissimilarity ranking."""
    feats = GOOD.clone()
    feats[row, 1] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        retention_mask(feats, (2, 4, 4), MERGE, 0.5)


def test_non_finite_single_frame_video_is_rejected():
    """A single-frame video with a NaN feature is refused too, although frame 0 is always kept and needs no ranking."""
    feats = torch.randn(4, 3)
    feats[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        retention_mask(feats, (1, 4, 4), MERGE, 0.5)


@pytest.mark.parametrize(
    "feats, match",
    [
        (GOOD.long(), "floating-point"),
        (GOOD.reshape(-1), "rank 2"),
        (GOOD.reshape(1, 8, 3), "rank 2"),
        (GOOD.numpy(), "torch.Tensor"),
    ],
)
def test_bad_feature_tensor_is_rejected(feats, match):
    """Features must be a floating-point torch.Tensor of rank 2: integer, rank-1, rank-3 and numpy inputs are refused.
    """
    with pytest.raises(ValueError, match=match):
        retention_mask(feats, (2, 4, 4), MERGE, 0.5)


def test_non_finite_pixels_are_rejected():
    """pixel_dissimilarity refuses pixel_values holding a NaN."""
    pixels = torch.zeros(2 * 4 * 4, 12)
    pixels[3, 3] = float("nan")
    with pytest.raises(ValueError, match="pixel_values"):
        pixel_dissimilarity(pixels, (2, 4, 4), 2)


def test_pixel_row_count_must_match_grid():
    """pixel_dissimilarity refuses a pixel tensor whose patch row count does not match the grid."""
    with pytest.raises(ValueError, match="patch rows"):
        pixel_dissimilarity(torch.zeros(10, 12), (2, 4, 4), 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(threshold=float("nan")), "threshold"),
        (dict(threshold=0.1, min_keep_fraction=0.8, max_keep_fraction=0.2), "must not exceed"),
        (dict(threshold=0.1, min_keep_fraction=-0.1), "min_keep_fraction"),
        (dict(threshold=0.1, max_keep_fraction=1.1), "max_keep_fraction"),
    ],
)
def test_bad_threshold_arguments_are_rejected(kwargs, match):
    """threshold_mask refuses a NaN threshold, keep fractions outside [0, 1] and a min_keep_fraction above
    max_keep_fraction."""
    with pytest.raises(ValueError, match=match):
        threshold_mask(GOOD, (2, 4, 4), MERGE, **kwargs)


def test_pixel_mask_needs_exactly_one_of_rate_and_threshold():
    """pixel_retention_mask needs exactly one of rate and threshold: neither and both are refused."""
    pixels = torch.zeros(2 * 4 * 4, 12)
    with pytest.raises(ValueError, match="exactly one"):
        pixel_retention_mask(pixels, (2, 4, 4), 2)
    with pytest.raises(ValueError, match="exactly one"):
        pixel_retention_mask(pixels, (2, 4, 4), 2, rate=0.5, threshold=0.1)


@pytest.mark.parametrize("args", [(0, 4, 0.5), (4, 0, 0.5), (4, 2, 1.0), (2.5, 2, 0.1)])
def test_retained_count_rejects_bad_arguments(args):
    """retained_count refuses non-positive or non-int token and frame counts and a rate of 1."""
    with pytest.raises(ValueError):
        retained_count(*args)


# --------------------------------------------------------------------------------------------
# random baseline scores
# --------------------------------------------------------------------------------------------
def test_random_scores_keep_the_evs_count_and_frame_zero():
    """Random scores + rate selection keep exactly retained_count tokens, frame 0 whole."""
    grids = [(5, 4, 4), (3, 2, 4)]
    d = evs.random_dissimilarity(grids, MERGE, seed=1)
    mask = evs.select_by_rate(d, grids, MERGE, 0.6)
    assert int(mask[:20].sum()) == retained_count(4, 5, 0.6) and mask[:4].all()
    assert int(mask[20:].sum()) == retained_count(2, 3, 0.6) and mask[20:22].all()


def test_random_scores_are_seeded():
    """Same seed, same scores; another seed, other scores."""
    a = evs.random_dissimilarity((6, 4, 4), MERGE, seed=3)
    assert torch.equal(a, evs.random_dissimilarity((6, 4, 4), MERGE, seed=3))
    assert not torch.equal(a, evs.random_dissimilarity((6, 4, 4), MERGE, seed=4))
