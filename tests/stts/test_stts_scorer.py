"""STTSScorer: shapes, the (0, 1) range, previous-frame pairing, window layout helpers."""

import pytest
import torch

from videoprune.stts import STTSScorer, grid_to_windows, window_mean, window_view, windows_to_grid

WIDTH, MLP, ATTN = 8, 16, 4


def make_scorer(pool, seed=0):
    torch.manual_seed(seed)
    return STTSScorer(WIDTH, pool, MLP, ATTN)


@pytest.mark.parametrize("pool, t, hp, wp", [(2, 3, 4, 6), (3, 2, 6, 3), (1, 1, 2, 2)])
def test_scores_have_pooled_grid_shape_and_lie_in_open_unit_interval(pool, t, hp, wp):
    """The scorer returns one score per pooled window, strictly inside (0, 1) even for large inputs."""
    scores = make_scorer(pool)(torch.randn(t, hp, wp, WIDTH) * 10)
    assert scores.shape == (t, hp // pool, wp // pool)
    assert bool(((scores > 0) & (scores < 1)).all())


def test_leading_video_dims_are_independent():
    """Videos stacked in leading dimensions are scored independently: each equals scoring it alone."""
    scorer, x = make_scorer(2), torch.randn(2, 3, 4, 4, WIDTH)
    batched = scorer(x)
    torch.testing.assert_close(batched[1], scorer(x[1]))


def test_score_at_t_depends_on_frame_t_minus_1_only_among_earlier_frames():
    """Among earlier frames, frame t's score depends on frame t-1 only: changing frame 1 alters frame 2's scores and
    leaves frames 0 and 3 alone."""
    scorer, x = make_scorer(2), torch.randn(4, 4, 4, WIDTH)
    y = x.clone()
    y[1] += torch.randn_like(y[1])  # change frame 1
    a, b = scorer(x), scorer(y)
    torch.testing.assert_close(a[0], b[0])  # frame 0 does not look ahead
    assert not torch.allclose(a[2], b[2])  # frame 2 is paired with frame 1
    torch.testing.assert_close(a[3], b[3])  # frame 3 is paired with frame 2 only


def test_frame_0_is_paired_with_zeros():
    """Frame 0 has no previous frame, so its pooled features are paired with zeros."""
    scorer, x = make_scorer(2), torch.randn(2, 2, 2, WIDTH)
    pooled = scorer.pool_windows(x)
    expected = torch.sigmoid(scorer.mlp(torch.cat([pooled[0], torch.zeros_like(pooled[0])], -1)).squeeze(-1))
    torch.testing.assert_close(scorer(x)[0], expected)


def test_attention_pool_is_a_convex_combination_of_the_normalised_window():
    """The attention pool output lies within the range of its window's normalised tokens, as a convex combination must.
    """
    scorer, x = make_scorer(3), torch.randn(1, 3, 3, WIDTH)
    pooled = scorer.pool_windows(x)[0, 0, 0]
    normed = scorer.norm(x.reshape(9, WIDTH))
    assert bool((pooled <= normed.max(0).values + 1e-6).all() and (pooled >= normed.min(0).values - 1e-6).all())


def test_window_view_groups_each_pool_by_pool_block():
    """window_view groups each pool x pool block of patches into one window, and window_mean averages it."""
    x = torch.arange(4 * 6).float().reshape(1, 4, 6, 1)
    w = window_view(x, 2)
    assert w.shape == (1, 2, 3, 4, 1)
    assert w[0, 1, 2, :, 0].tolist() == [16.0, 17.0, 22.0, 23.0]  # rows 2-3, cols 4-5
    assert window_mean(x, 2)[0, 1, 2, 0].item() == pytest.approx(19.5)


def test_window_major_layout_round_trips():
    """grid_to_windows lists tokens window by window and windows_to_grid restores the grid exactly."""
    t, hp, wp, pool = 2, 4, 6, 2
    grid = torch.randn(t, hp, wp, 3)
    flat = grid_to_windows(grid, pool)
    assert torch.equal(flat[:4], window_view(grid, pool)[0, 0, 0])
    assert torch.equal(windows_to_grid(flat, t, hp, wp, pool), grid)


def test_grid_not_multiple_of_pool_is_rejected():
    """A patch grid that is not a multiple of the pool size is refused."""
    with pytest.raises(ValueError, match="pool"):
        make_scorer(3)(torch.randn(1, 4, 6, WIDTH))
