"""Hard selection: exact drop count, frame 0 kept, ties to the lower raster index, and the baselines."""

import pytest
import torch

from videoprune.stts import (
    drop_count,
    method_scores,
    prev_frame_scores,
    random_scores,
    redundant_to_reference,
    ref_frame_scores,
    select_tokens,
)

POOL = 2


@pytest.mark.parametrize("t, h, w", [(4, 2, 3), (5, 3, 3), (2, 1, 4)])
@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75])
def test_drops_exactly_the_count_and_keeps_frame_0(t, h, w, ratio):
    """select_tokens drops exactly drop_count tokens for every shape and ratio, and always keeps frame 0 whole."""
    sel = select_tokens(torch.rand(t, h, w), ratio, POOL)
    n = drop_count(h * w, t, ratio)
    assert sel.num_dropped == n
    assert int((~sel.keep_pooled).sum()) == n
    assert bool(sel.keep_pooled[0].all())


def test_drop_count_follows_int_of_ratio_times_tokens():
    """drop_count is int(ratio x all tokens), and a single-frame video drops nothing."""
    assert drop_count(81, 128, 0.5) == int(0.5 * 81 * 128)
    assert drop_count(10, 1, 0.25) == 2 - 2  # T = 1: nothing outside frame 0
    assert drop_count(3, 3, 0.3) == 2  # int(2.7)


def test_drop_count_caps_at_everything_but_frame_0():
    """drop_count never exceeds the tokens outside frame 0, so a high ratio keeps frame 0 and drops the rest."""
    assert drop_count(4, 2, 0.75) == 4  # int(6) requested, frames 1.. hold 4
    sel = select_tokens(torch.rand(2, 2, 2), 0.75, POOL)
    assert sel.keep_pooled[0].all() and not sel.keep_pooled[1].any()


def test_lowest_scores_are_dropped_globally_across_frames():
    """The lowest scores are dropped across all later frames together, not per frame."""
    scores = torch.tensor([[[0.0, 0.0]], [[0.9, 0.1]], [[0.2, 0.8]]])  # frame 0 values irrelevant
    sel = select_tokens(scores, 0.34, POOL)  # int(0.34 * 6) = 2
    assert sel.keep_pooled.flatten().tolist() == [True, True, True, False, False, True]


def test_ties_keep_the_lower_raster_index():
    """Among tied scores the token with the lower raster index is kept, so selection is deterministic."""
    scores = torch.full((3, 2, 2), 0.5)
    sel = select_tokens(scores, 0.5, POOL)  # drop 6 of the 8 non-frame-0 tokens, all tied
    assert sel.keep_pooled.flatten().tolist() == [True] * 4 + [True, True, False, False] + [False] * 4


def test_patch_mask_expands_each_window():
    """keep_patches expands each pooled decision to every patch of its pool x pool window."""
    sel = select_tokens(torch.rand(3, 2, 3), 0.5, POOL)
    assert sel.keep_patches.shape == (3, 4, 6)
    assert torch.equal(sel.keep_patches[:, ::POOL, ::POOL], sel.keep_pooled)
    assert torch.equal(sel.keep_patches[:, 1::POOL, 1::POOL], sel.keep_pooled)


def test_frame_0_is_kept_even_with_the_lowest_scores():
    """Frame 0 is kept even when its scores are the lowest of the video."""
    scores = torch.rand(3, 2, 2) + 1
    scores[0] = -100
    assert select_tokens(scores, 0.5, POOL).keep_pooled[0].all()


def test_nan_scores_are_rejected():
    """NaN scores are refused, since they would make the ranking meaningless."""
    with pytest.raises(ValueError, match="NaN"):
        select_tokens(torch.full((2, 1, 1), float("nan")), 0.5, POOL)


# ---------------------------------------------------------------------------- baselines
def moving_video(t=4, h=2, w=2, c=6, static=(0, 1)):
    """Window features where location ``static`` never changes and every other location is new each frame."""
    torch.manual_seed(1)
    f = torch.randn(t, h, w, c)
    f[:, static[0], static[1]] = f[0, static[0], static[1]]
    return f


def test_random_is_seeded_and_differs_between_seeds():
    """Random scores repeat for one seed and change with another, and random selection still keeps frame 0 and drops the
    budget."""
    a, b = random_scores((3, 2, 2), 7), random_scores((3, 2, 2), 7)
    assert torch.equal(a, b) and not torch.equal(a, random_scores((3, 2, 2), 8))
    f = moving_video()
    sel = select_tokens(method_scores("random", window_features=f, seed=3), 0.5, POOL)
    assert sel.keep_pooled[0].all() and sel.num_dropped == 8


def test_prev_frame_similarity_prunes_the_static_patch_first():
    """Previous-frame similarity gives frame 0 infinite scores and a static location zero, so that location is dropped
    first in every later frame."""
    f = moving_video()
    s = prev_frame_scores(f)
    assert torch.isinf(s[0]).all()
    assert torch.allclose(s[1:, 0, 1], torch.zeros(3), atol=1e-6)
    sel = select_tokens(s, 0.2, POOL)  # int(0.2 * 16) = 3 drops: exactly the static location of frames 1..3
    dropped = (~sel.keep_pooled).nonzero().tolist()
    assert dropped == [[1, 0, 1], [2, 0, 1], [3, 0, 1]]


def test_reference_resets_only_where_content_changed():
    """A token is redundant when it matches its location's reference, and the reference moves on only where the content
    changed."""
    c = 4
    base = torch.eye(c)[0]
    f = torch.zeros(3, 1, 2, c)
    f[:, 0, 0] = base  # location 0 static
    f[0, 0, 1], f[1, 0, 1], f[2, 0, 1] = torch.eye(c)[1], torch.eye(c)[2], torch.eye(c)[2]  # change, then static
    red = redundant_to_reference(f, 0.85)
    assert red.tolist() == [[[False, False]], [[True, False]], [[True, True]]]


def test_reference_catches_slow_drift_that_prev_frame_misses():
    """Each step turns the vector by 15 degrees: cos to the previous frame stays 0.966 > 0.85, but the
    angle to the reference (frame 0) passes arccos(0.85) = 31.8 degrees at frame 3, which then becomes the reference."""
    angles = torch.deg2rad(torch.arange(5) * 15.0)
    f = torch.stack([angles.cos(), angles.sin()], -1).view(5, 1, 1, 2)
    assert (prev_frame_scores(f)[1:] < 1 - 0.85).all()  # every step is "similar" to its predecessor
    red = redundant_to_reference(f, 0.85).flatten().tolist()
    assert red == [False, True, True, False, True]
    s = ref_frame_scores(f, 0.85).flatten()
    assert s[3] > 1 - 0.85 > s[4]  # the novel token scores at least 1 - threshold, redundant ones below


def test_ref_frame_similarity_drops_redundant_tokens_first_under_the_budget():
    """ref_frame_similarity drops the tokens redundant to their reference first when the budget allows."""
    f = moving_video()
    sel = select_tokens(method_scores("ref_frame_similarity", window_features=f), 0.2, POOL)
    assert (~sel.keep_pooled).nonzero().tolist() == [[1, 0, 1], [2, 0, 1], [3, 0, 1]]


def test_learned_method_passes_scores_through_and_needs_them():
    """The learned method returns the scorer's scores unchanged and is refused without them."""
    s = torch.rand(2, 1, 1)
    assert method_scores("learned", learned=s) is s
    with pytest.raises(ValueError, match="learned"):
        method_scores("learned", window_features=torch.randn(2, 1, 1, 3))
